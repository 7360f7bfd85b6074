//! `meshplane control-plane`'s configuration as a user meets it: `--help` shows the defaults,
//! flags beat `MESHPLANE_<FLAG>` variables, which beat the `--config` file, which beats the
//! defaults, and `--print-config` prints what `--config` reads back.

use std::path::Path;
use std::process::{Command, Output};

use meshplane_runtime::ControlPlaneConfig;

/// `meshplane control-plane` with none of the caller's `MESHPLANE_*` variables.
fn control_plane() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meshplane"));
    command.arg("control-plane");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MESHPLANE_") {
            command.env_remove(name);
        }
    }
    command
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("meshplane runs");
    assert!(
        output.status.success(),
        "meshplane failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn printed(command: &mut Command) -> (String, ControlPlaneConfig) {
    let output = run(command.arg("--print-config"));
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let config = serde_norway::from_str(&text).expect("--print-config is a --config file");
    (text, config)
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn help_shows_defaults_and_variables() {
    let output = run(control_plane().arg("--help"));
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "--xds-addr <XDS_ADDR>",
        "[default: 127.0.0.1:18000]",
        "[env: MESHPLANE_XDS_ADDR=]",
        "[default: ./meshplane-data]",
        "[default: meshplane.local]",
        "--print-config",
        "--config <CONFIG>",
    ] {
        assert!(help.contains(expected), "`{expected}` not in:\n{help}");
    }
}

#[test]
fn flags_beat_variables_beat_the_file_beats_defaults() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = write(
        dir.path(),
        "cp.yaml",
        "xds-addr: 127.0.0.1:19000\nadmin-addr: 127.0.0.1:19080\ndatacenter: from-file\n\
         cert-ttl: 1h\npeers: [http://file:1]\n",
    );
    let (_, config) = printed(
        control_plane()
            .arg("--config")
            .arg(&file)
            .args(["--datacenter", "from-flag", "--peers", "http://flag:1"])
            .env("MESHPLANE_ADMIN_ADDR", "127.0.0.1:29080")
            .env("MESHPLANE_DATACENTER", "from-env")
            .env("MESHPLANE_PEERS", "http://env:1")
            .env("MESHPLANE_TRUST_DOMAIN", "env.example"),
    );
    assert_eq!(
        config.datacenter, "from-flag",
        "flag over variable and file"
    );
    assert_eq!(
        config.peers,
        ["http://flag:1"],
        "flag over variable and file"
    );
    assert_eq!(config.admin_addr.port(), 29080, "variable over file");
    assert_eq!(config.trust_domain, "env.example", "variable over default");
    assert_eq!(config.xds_addr.port(), 19000, "file over default");
    assert_eq!(config.cert_ttl, "1h", "file over default");
    assert_eq!(config.registry_addr.port(), 8500, "default");

    // The file itself may come from MESHPLANE_CONFIG.
    let (_, config) = printed(control_plane().env("MESHPLANE_CONFIG", &file));
    assert_eq!(config.datacenter, "from-file");
}

#[test]
fn print_config_reads_back_through_config_without_secrets() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = write(
        dir.path(),
        "cp.yaml",
        "registry: file\nservices-file: services.yaml\n\
         domain-addresses: {api.partner.example: 10.1.2.3}\nconsul-token: file-secret\n",
    );
    let (first, config) = printed(
        control_plane()
            .arg("--config")
            .arg(&file)
            .args(["--allow-wildcard-dependencies", "gateway,audit"])
            .args(["--xds-addr", "127.0.0.1:19000"])
            .env("MESHPLANE_TOKEN", "env-secret"),
    );
    assert!(
        !first.contains("env-secret") && !first.contains("file-secret"),
        "{first}"
    );
    assert!(first.contains("# token: set (not printed)"), "{first}");
    assert_eq!(config.token, None);
    assert_eq!(
        config.domain_addresses["api.partner.example"].to_string(),
        "10.1.2.3"
    );
    assert_eq!(config.allow_wildcard_dependencies.len(), 2);

    let printed_file = write(dir.path(), "printed.yaml", &first);
    let (second, _) = printed(control_plane().arg("--config").arg(&printed_file));
    let settings = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(settings(&second), settings(&first));
}

#[test]
fn an_unknown_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = write(dir.path(), "cp.yaml", "xds-adr: 127.0.0.1:19000\n");
    let output = control_plane()
        .arg("--config")
        .arg(&file)
        .arg("--print-config")
        .output()
        .expect("meshplane runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("unknown field `xds-adr`"), "{stderr}");
    assert!(stderr.contains("cp.yaml"), "{stderr}");
}
