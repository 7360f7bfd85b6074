//! The command as BENCHMARKS.md runs it: scenario and client processes, Meshplane then the
//! floor, one table.

use std::process::Command;

#[test]
fn the_command_prints_a_meshplane_row_against_the_floor_and_a_floor_row() {
    let output = Command::new(env!("CARGO_BIN_EXE_meshplane-xds-bench"))
        .args(["--streams", "20", "--mode", "delta", "--layout", "mixed"])
        .args(["--rounds", "2", "--streams-per-conn", "8"])
        .args(["--sync-timeout-secs", "60", "--ack-timeout-secs", "60"])
        .output()
        .expect("the bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| mixed | delta | 20 |"))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    let cells = |row: &str| -> Vec<String> {
        row.trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let (meshplane, floor) = (cells(rows[0]), cells(rows[1]));
    assert_eq!(meshplane[3], "meshplane");
    assert_eq!(floor[3], "floor");
    // Round 1 affects all 20 proxies, round 2 all but group 0's five.
    assert_eq!(meshplane[6], "15–20", "{stdout}");
    assert_eq!(floor[6], "15–20", "{stdout}");
    assert!(meshplane[11].ends_with('×'), "a × floor ratio: {stdout}");
    assert!(meshplane[14].contains("wildcard"), "{stdout}");
    assert_eq!(meshplane[15], "0/5", "no unaffected proxy got a response");
    assert_eq!(floor[15], "0/5");
    assert_eq!(meshplane[16], "20/20");
}
