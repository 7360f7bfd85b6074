//! What the unit tests of several modules share: a catalog of fixed services.

use meshplane_model::{Instance, ServiceName};

use crate::Catalog;

/// A catalog holding exactly these services and instances, in this order.
pub(crate) struct Fixture(pub(crate) Vec<(ServiceName, Vec<Instance>)>);

impl Catalog for Fixture {
    fn services(&self) -> Vec<ServiceName> {
        self.0.iter().map(|(n, _)| n.clone()).collect()
    }
    fn instances(&self, service: &ServiceName) -> Option<&[Instance]> {
        self.0
            .iter()
            .find(|(n, _)| n == service)
            .map(|(_, i)| i.as_slice())
    }
}

/// A service name known to be valid.
pub(crate) fn name(s: &str) -> ServiceName {
    ServiceName::new(s).expect("valid")
}
