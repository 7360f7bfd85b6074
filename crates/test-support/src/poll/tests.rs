use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::*;

#[tokio::test]
async fn eventually_returns_the_value_once_the_check_holds() {
    let calls = AtomicU32::new(0);
    let value = eventually("the third call", Duration::from_secs(5), || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n >= 3 {
                Ok(n * 10)
            } else {
                Err(format!("call {n}"))
            }
        }
    })
    .await;
    assert_eq!(value, 30);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_timeout_names_what_and_the_last_thing_seen() {
    let start = Instant::now();
    let calls = AtomicU32::new(0);
    let timeout = try_eventually("the answer", Duration::from_millis(200), || {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move { Err::<(), _>(format!("saw {n}")) }
    })
    .await
    .expect_err("never holds");
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the deadline is kept"
    );
    let last = calls.load(Ordering::SeqCst) - 1;
    assert_eq!(timeout.what, "the answer");
    assert_eq!(timeout.last, format!("saw {last}"));
    let message = timeout.to_string();
    assert!(message.contains("waiting for the answer"), "{message}");
    assert!(
        message.contains(&format!("last seen: saw {last}")),
        "{message}"
    );
}

#[tokio::test]
#[should_panic(expected = "waiting for a flag; last seen: the condition was false")]
async fn eventually_panics_on_timeout() {
    eventually("a flag", Duration::from_millis(50), || async { false }).await;
}

#[test]
fn the_blocking_variant_waits_and_panics_like_the_async_one() {
    let start = std::time::Instant::now();
    let found = eventually_blocking("100ms to pass", Duration::from_secs(5), || {
        (start.elapsed() >= Duration::from_millis(100)).then_some("done")
    });
    assert_eq!(found, "done");
    let panicked = std::panic::catch_unwind(|| {
        eventually_blocking("nothing", Duration::from_millis(50), || None::<()>)
    })
    .expect_err("times out");
    let message = panicked.downcast_ref::<String>().expect("a message");
    assert!(
        message.contains("waiting for nothing; last seen: nothing yet"),
        "{message}"
    );
}

#[tokio::test]
async fn eventually_watch_sees_a_later_change_and_reports_the_last_value() {
    let (tx, mut rx) = watch::channel(0u32);
    let sender = tokio::spawn(async move {
        for n in 1..=5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.send_replace(n);
        }
        tx
    });
    let seen = eventually_watch(&mut rx, "five", Duration::from_secs(5), |n| {
        if *n == 5 {
            Ok(*n)
        } else {
            Err(format!("n = {n}"))
        }
    })
    .await;
    assert_eq!(seen, 5);
    let _tx = sender.await.expect("sender task");
    let timed_out = tokio::spawn(async move {
        eventually_watch(&mut rx, "six", Duration::from_millis(50), |n| {
            if *n == 6 {
                Ok(())
            } else {
                Err(format!("n = {n}"))
            }
        })
        .await
    })
    .await
    .expect_err("times out");
    let message = timed_out.into_panic();
    let message = message.downcast_ref::<String>().expect("a message");
    assert!(
        message.contains("waiting for six; last seen: n = 5"),
        "{message}"
    );
}

#[tokio::test]
async fn hold_checks_for_the_whole_window() {
    let start = Instant::now();
    let passed = hold(Duration::from_millis(200), "always true", || async { true }).await;
    assert!(start.elapsed() >= Duration::from_millis(200));
    // Every ~10 ms: far more than one check, so a short violation would be seen.
    assert!(passed >= 5, "only {passed} checks in 200ms");
}

#[tokio::test]
async fn hold_fails_on_the_first_violation_mid_window_with_what_was_seen() {
    let start = Instant::now();
    let violation = try_hold(Duration::from_secs(5), "requests succeed", || {
        let elapsed = start.elapsed();
        async move {
            if elapsed < Duration::from_millis(150) {
                Ok(())
            } else {
                Err(format!("status 503 at {}ms", elapsed.as_millis()))
            }
        }
    })
    .await
    .expect_err("the check stops holding after 150ms");
    // Failed at the first violation, not at the end of the window.
    assert!(start.elapsed() < Duration::from_secs(2), "{violation}");
    assert!(violation.at >= Duration::from_millis(150), "{violation}");
    assert!(violation.passed >= 2, "{violation}");
    assert!(violation.seen.starts_with("status 503 at "), "{violation}");
    let message = violation.to_string();
    assert!(
        message.contains("`requests succeed` stopped holding"),
        "{message}"
    );
    assert!(message.contains("5s window"), "{message}");
}

#[tokio::test]
#[should_panic(expected = "`the count stays below 3` stopped holding")]
async fn hold_panics_on_a_violation() {
    let count = Arc::new(AtomicU32::new(0));
    hold(Duration::from_secs(5), "the count stays below 3", || {
        let n = count.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 3 {
                Ok(())
            } else {
                Err(format!("count = {n}"))
            }
        }
    })
    .await;
}

#[test]
fn the_fault_window_is_read_with_the_project_duration_parser() {
    assert_eq!(parse_fault_window(None), Ok(DEFAULT_FAULT_WINDOW));
    assert_eq!(parse_fault_window(Some("3s")), Ok(Duration::from_secs(3)));
    assert_eq!(parse_fault_window(Some("2m")), Ok(Duration::from_secs(120)));
    assert_eq!(
        parse_fault_window(Some("1m30s")),
        Ok(Duration::from_secs(90))
    );
    let bad = parse_fault_window(Some("three seconds")).expect_err("malformed");
    assert!(
        bad.starts_with("MESHPLANE_FAULT_WINDOW: invalid duration"),
        "{bad}"
    );
    let zero = parse_fault_window(Some("0s")).expect_err("zero");
    assert!(zero.contains("longer than zero"), "{zero}");
}

#[tokio::test]
async fn hold_during_checks_until_the_future_ends_and_returns_its_output() {
    let calls = AtomicU32::new(0);
    let (answer, passed) = hold_during(
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            42
        },
        "always",
        || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { true }
        },
    )
    .await;
    assert_eq!(answer, 42);
    assert!(
        passed >= 2,
        "checked while running and once after: {passed}"
    );
    assert_eq!(u64::from(calls.load(Ordering::SeqCst)), passed);
}

#[tokio::test]
#[should_panic(expected = "`traffic` stopped holding")]
async fn hold_during_panics_on_the_first_violation() {
    let calls = AtomicU32::new(0);
    hold_during(
        tokio::time::sleep(Duration::from_secs(5)),
        "traffic",
        || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { n < 3 }
        },
    )
    .await;
}
