//! How fast the built-in CA signs: a fleet of N sidecars renewing every `ttl / 2` needs
//! `2N / ttl` signatures per second (10,000 sidecars with 24 h certificates: 0.23/s; with
//! 1 h certificates: 5.6/s). Prints CSR checks + signatures per second on one core.
//!
//! `cargo bench -p meshplane-ca --bench sign`

use std::time::{Duration, Instant, SystemTime};

use meshplane_ca::{Authority, key_and_csr};
use meshplane_model::ServiceName;
use meshplane_model::identity::SignRequest;

fn main() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Authority::load_or_generate(dir.path(), "meshplane.local", Duration::from_secs(3600))
        .expect("ca");
    let requests: Vec<SignRequest> = (0..200)
        .map(|i| {
            let service = ServiceName::new(format!("service-{i}")).expect("name");
            let (_key, csr) = key_and_csr("meshplane.local", &service).expect("csr");
            SignRequest {
                service: service.to_string(),
                csr,
            }
        })
        .collect();
    // Warm up, then measure.
    for r in requests.iter().take(20) {
        ca.sign(r, SystemTime::now()).expect("signs");
    }
    let rounds = 10;
    let started = Instant::now();
    for _ in 0..rounds {
        for r in &requests {
            ca.sign(r, SystemTime::now()).expect("signs");
        }
    }
    let elapsed = started.elapsed();
    let n = rounds * requests.len();
    println!(
        "signed {n} CSRs (P-256) in {elapsed:.2?}: {:.0} signatures/s, {:.0} µs each",
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
}
