//! A bad descriptor stops the sidecar before Envoy starts, with an error naming the field.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use meshplane_sidecar::{ControlPlaneAddr, Sidecar, SidecarConfig, SidecarError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

async fn run_with(descriptor: &str) -> (SidecarError, bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meshplane.yaml");
    std::fs::write(&path, descriptor).unwrap();
    // A stand-in "Envoy" that leaves a mark if anyone ever starts it.
    let marker = dir.path().join("envoy-was-started");
    let fake_envoy = dir.path().join("envoy");
    std::fs::write(
        &fake_envoy,
        format!("#!/bin/sh\ntouch '{}'\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake_envoy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut config = SidecarConfig::new(
        path,
        vec![ControlPlaneAddr {
            host: "127.0.0.1".into(),
            port: 1,
        }],
    );
    config.envoy = Some(fake_envoy);
    config.work_dir = Some(dir.path().to_owned());
    let (_tx, rx) = mpsc::channel(1);
    let err = Sidecar::new(config)
        .run(CancellationToken::new(), rx)
        .await
        .unwrap_err();
    (err, marker.exists())
}

#[tokio::test]
async fn bad_descriptors_name_the_field_and_envoy_never_starts() {
    let cases = [
        (
            "service: orders\nport: 8080\ningress: { port: 31001 }\ndependencies:\n  - service: payments\n    timeout: 2 parsecs\n",
            "dependencies[0].timeout",
        ),
        (
            "service: orders\nport: 8080\ningress: { port: 31001 }\nunknown_thing: 1\n",
            "unknown_thing",
        ),
        (
            "service: orders\nport: 8080\ningress: { port: 8080 }\n",
            "ingress.port",
        ),
        (
            "service: orders\nport: 8080\ningress: { port: 31001 }\nadmin: { port: 1 }\n",
            "admin",
        ),
    ];
    for (yaml, field) in cases {
        let (err, envoy_started) = run_with(yaml).await;
        assert!(matches!(err, SidecarError::Descriptor(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(field), "`{message}` should name `{field}`");
        assert!(
            message.contains("meshplane.yaml"),
            "`{message}` should name the file"
        );
        assert!(!envoy_started, "Envoy must not start with a bad descriptor");
    }
}

#[tokio::test]
async fn a_missing_descriptor_says_which_file() {
    let mut config = SidecarConfig::new(
        "/nonexistent/meshplane.yaml",
        vec![ControlPlaneAddr {
            host: "127.0.0.1".into(),
            port: 1,
        }],
    );
    config.envoy = Some("/nonexistent/envoy".into());
    let (_tx, rx) = mpsc::channel(1);
    let err = Sidecar::new(config)
        .run(CancellationToken::new(), rx)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/meshplane.yaml"),
        "{err}"
    );
}
