//! Every example of `docs/services-file.md` goes through the file registry's parser: valid
//! examples must be accepted, `yaml error` examples refused with the message they document.
//! A doc example that drifts from the code fails here.

use meshplane_registry_file::parse;
use meshplane_test_support::docs::blocks_tagged;

const DOC: &str = include_str!("../../../docs/services-file.md");

#[test]
fn valid_examples_parse() {
    let examples = blocks_tagged(DOC, "yaml");
    assert!(examples.len() >= 2, "the page lost its examples");
    for body in examples {
        match parse(&body, "dc1") {
            Ok(services) => assert!(!services.is_empty(), "an example without services"),
            Err(e) => panic!("documented example refused: {e}\n{body}"),
        }
    }
}

#[test]
fn error_examples_fail_with_the_documented_message() {
    let examples = blocks_tagged(DOC, "yaml error");
    assert!(examples.len() >= 4, "the page lost its error examples");
    let drifted: Vec<String> = examples
        .iter()
        .filter_map(|body| {
            let expected = body
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# error: "))
                .unwrap_or_else(|| panic!("starts with `# error: MESSAGE`:\n{body}"));
            match parse(body, "dc1") {
                Ok(_) => Some(format!("accepted, documented as refused:\n{body}")),
                Err(e) if e.to_string() != expected => {
                    Some(format!("documented: {expected}\nactual:     {e}"))
                }
                Err(_) => None,
            }
        })
        .collect();
    assert!(drifted.is_empty(), "{}", drifted.join("\n\n"));
}

#[test]
fn the_fuller_example_means_what_the_page_says() {
    let examples = blocks_tagged(DOC, "yaml");
    let services = parse(&examples[1], "dc9").expect("valid");
    let payments = &services["payments"];
    let defaulted = &payments[1];
    assert_eq!(defaulted.locality.datacenter, "dc9", "--datacenter default");
    assert_eq!(defaulted.node, "file");
    let eu = &payments[2];
    assert_eq!(eu.weight, 1, "documented default weight");
    assert_eq!(eu.health, meshplane_model::Health::Warning);
    assert!(services["reports"].is_empty());
}
