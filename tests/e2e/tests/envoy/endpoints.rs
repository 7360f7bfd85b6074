//! Changing a service's endpoints moves traffic, and sends nothing but endpoints.

use meshplane_e2e::{Flavour, Upstream, egress};
use meshplane_xds::ResourceType;

use crate::{NODE, SERVICE, Web, all_acked};

async fn endpoint_change_moves_traffic(flavour: Flavour) {
    let web = Web::start(flavour).await;
    web.cp
        .wait_for_proxy(NODE, "every type ACKed", all_acked)
        .await
        .expect("ACKs");
    let before = web.responses();

    let payments_2 = Upstream::start("payments-2").await.expect("start upstream");
    web.cp
        .publish(
            SERVICE,
            egress(
                web.port,
                &[("payments", "payments")],
                &[("payments", &[payments_2.port()])],
            ),
        )
        .expect("publish");
    web.client
        .wait_served_by("payments", "payments-2")
        .await
        .expect("traffic moves to payments-2");
    for _ in 0..10 {
        let reply = web.client.get("payments").await.expect("request");
        assert_eq!((reply.status, reply.body.as_str()), (200, "payments-2"));
    }

    let status = web
        .cp
        .wait_for_proxy(NODE, "every type ACKed", all_acked)
        .await
        .expect("ACKs");
    let mut expected = before;
    *expected.entry(ResourceType::Endpoint).or_default() += 1;
    assert_eq!(
        web.responses(),
        expected,
        "an endpoint change sends exactly one EDS response: {status:?}"
    );
}

crate::both_flavours!(endpoint_change_moves_traffic);
