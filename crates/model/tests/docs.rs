//! Every example of `docs/descriptor.md` goes through the real parser and validator: valid
//! examples must be accepted, `yaml error` examples refused with the message they document, and
//! the node-metadata example accepted once the sidecar's own keys are removed. A doc example
//! that drifts from the code fails here.

use meshplane_model::Descriptor;
use meshplane_model::node_metadata::SIDECAR_KEYS;
use meshplane_test_support::docs::blocks_tagged;

const DOC: &str = include_str!("../../../docs/descriptor.md");

/// The message a `yaml error` example documents in its first line.
fn documented_error(body: &str) -> &str {
    body.lines()
        .next()
        .and_then(|l| l.strip_prefix("# error: "))
        .unwrap_or_else(|| panic!("a `yaml error` example starts with `# error: MESSAGE`:\n{body}"))
}

#[test]
fn valid_examples_parse() {
    let examples = blocks_tagged(DOC, "yaml");
    assert!(examples.len() >= 5, "the page lost its examples");
    for body in examples {
        if let Err(e) = Descriptor::from_yaml(&body) {
            panic!("documented example refused: {e}\n{body}");
        }
    }
}

#[test]
fn error_examples_fail_with_the_documented_message() {
    let examples = blocks_tagged(DOC, "yaml error");
    assert!(examples.len() >= 10, "the page lost its error examples");
    let drifted: Vec<String> = examples
        .iter()
        .filter_map(|body| {
            let expected = documented_error(body);
            match Descriptor::from_yaml(body) {
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
fn the_node_metadata_example_is_a_valid_descriptor() {
    let examples = blocks_tagged(DOC, "json");
    assert_eq!(examples.len(), 1, "one node example");
    let node: serde_json::Value = serde_json::from_str(&examples[0]).expect("valid JSON");
    let mut metadata = node["metadata"].clone();
    let map = metadata.as_object_mut().expect("metadata is an object");
    for key in SIDECAR_KEYS {
        map.remove(key);
    }
    let descriptor = Descriptor::from_json(metadata).expect("a valid descriptor");
    assert_eq!(node["cluster"], descriptor.service.as_str(), "node.cluster");
}
