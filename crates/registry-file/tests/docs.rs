//! Every example of `docs/services-file.md` goes through the file registry's parser: valid
//! examples must be accepted, `yaml error` examples refused with the message they document.
//! A doc example that drifts from the code fails here.

use meshplane_registry_file::parse;

const DOC: &str = include_str!("../../../docs/services-file.md");

/// `(info string, body)` of every fenced block.
fn fenced_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "unclosed code fence");
    blocks
}

#[test]
fn valid_examples_parse() {
    let examples: Vec<_> = fenced_blocks(DOC)
        .into_iter()
        .filter(|(info, _)| info == "yaml")
        .collect();
    assert!(examples.len() >= 2, "the page lost its examples");
    for (_, body) in examples {
        match parse(&body, "dc1") {
            Ok(services) => assert!(!services.is_empty(), "an example without services"),
            Err(e) => panic!("documented example refused: {e}\n{body}"),
        }
    }
}

#[test]
fn error_examples_fail_with_the_documented_message() {
    let examples: Vec<_> = fenced_blocks(DOC)
        .into_iter()
        .filter(|(info, _)| info == "yaml error")
        .collect();
    assert!(examples.len() >= 4, "the page lost its error examples");
    let drifted: Vec<String> = examples
        .iter()
        .filter_map(|(_, body)| {
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
    let examples: Vec<_> = fenced_blocks(DOC)
        .into_iter()
        .filter(|(info, _)| info == "yaml")
        .collect();
    let services = parse(&examples[1].1, "dc9").expect("valid");
    let payments = &services["payments"];
    let defaulted = &payments[1];
    assert_eq!(defaulted.locality.datacenter, "dc9", "--datacenter default");
    assert_eq!(defaulted.node, "file");
    let eu = &payments[2];
    assert_eq!(eu.weight, 1, "documented default weight");
    assert_eq!(eu.health, meshplane_model::Health::Warning);
    assert!(services["reports"].is_empty());
}
