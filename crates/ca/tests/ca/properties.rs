//! Properties of `Authority::sign` over generated inputs. Case counts are modest because
//! every identity case generates a key.

use std::sync::LazyLock;

use meshplane_ca::{Authority, SignError, certificate_identity, key_and_csr};
use meshplane_model::identity::spiffe_id;
use proptest::prelude::*;

use crate::support::*;

static CA: LazyLock<Authority> = LazyLock::new(mk_authority);

/// Valid service names that are also valid SPIFFE path segments; short ones mostly, long
/// ones (no common name in the certificate) sometimes.
fn service_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9._-]{1,20}",
        1 => "[A-Za-z0-9._-]{65,253}",
    ]
    .prop_filter("`.` and `..` are refused", |s| s != "." && s != "..")
}

fn csr_text() -> impl Strategy<Value = String> {
    prop_oneof![
        // Arbitrary DER inside a correct armor.
        proptest::collection::vec(any::<u8>(), 0..600)
            .prop_map(|der| reencode("CERTIFICATE REQUEST", der)),
        // Arbitrary text inside the armor.
        any::<String>().prop_map(|body| {
            format!(
                "-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"
            )
        }),
        // Arbitrary text.
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn garbage_csrs_are_refused_without_panicking(csr in csr_text()) {
        let result = CA.sign(&mk_request("orders", csr), mk_now());
        prop_assert!(result.is_err(), "accepted garbage: {result:?}");
    }

    #[test]
    fn a_csr_is_signed_for_its_own_service_only(a in service_name(), b in service_name()) {
        prop_assume!(a != b);
        let (a_name, b_name) = (mk_service(&a), mk_service(&b));
        let (_key, csr) = key_and_csr(TD, &a_name).expect("CSR");

        let resp = CA.sign(&mk_request(&a, csr.clone()), mk_now()).expect("own service");
        let (uri, _) = certificate_identity(&resp.certificate_chain).expect("identity");
        prop_assert_eq!(&uri, &spiffe_id(TD, &a_name));
        prop_assert_eq!(&resp.identity, &uri);

        prop_assert_eq!(
            CA.sign(&mk_request(&b, csr), mk_now()),
            Err(SignError::WrongIdentity {
                expected: spiffe_id(TD, &b_name),
                found: spiffe_id(TD, &a_name),
            })
        );
    }

    #[test]
    fn a_changed_byte_never_panics_or_changes_the_key(at in any::<prop::sample::Index>(), xor in 1..=255u8) {
        static CSR: LazyLock<String> =
            LazyLock::new(|| key_and_csr(TD, &mk_service("orders")).expect("CSR").1);
        let mut der = der_of(&CSR);
        let i = at.index(der.len());
        der[i] ^= xor;
        // Almost always refused. A change the parser tolerates outside the signed body (DER
        // leniency) may pass, but the certificate is still for the signed key.
        if let Ok(resp) = CA.sign(&mk_request("orders", reencode("CERTIFICATE REQUEST", der)), mk_now()) {
            let leaf = der_of(&resp.certificate_chain);
            let leaf_key = parse_cert(&leaf).public_key().raw.to_vec();
            prop_assert_eq!(leaf_key, csr_spki(&CSR));
        }
    }
}
