//! Documentation examples as test input: the fenced code blocks of a Markdown file, so a
//! doc example that drifts from the code fails a test. A block's info string (`yaml error`,
//! `json GET /api/services`) says what the test does with it.

/// `(info string, body)` of every fenced block (```` ``` ```` fences at the start of a line),
/// in order. Panics on an unclosed fence, which would otherwise swallow the rest of the file.
pub fn fenced_blocks(markdown: &str) -> Vec<(String, String)> {
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

/// The bodies of the blocks whose info string is exactly `info`.
pub fn blocks_tagged(markdown: &str, info: &str) -> Vec<String> {
    fenced_blocks(markdown)
        .into_iter()
        .filter(|(tag, _)| tag == info)
        .map(|(_, body)| body)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# Title\n\nText.\n\n```yaml\na: 1\nb: 2\n```\n\n```yaml error\n# error: bad\n```\n\n```\nplain\n```\n\n```json GET /api\n{}\n```\n";

    #[test]
    fn blocks_come_with_their_info_string_and_body_in_order() {
        assert_eq!(
            fenced_blocks(DOC),
            [
                ("yaml".to_owned(), "a: 1\nb: 2\n".to_owned()),
                ("yaml error".to_owned(), "# error: bad\n".to_owned()),
                (String::new(), "plain\n".to_owned()),
                ("json GET /api".to_owned(), "{}\n".to_owned()),
            ]
        );
        assert_eq!(blocks_tagged(DOC, "yaml"), ["a: 1\nb: 2\n"]);
        assert!(fenced_blocks("no code here\n").is_empty());
    }

    #[test]
    #[should_panic(expected = "unclosed code fence")]
    fn an_unclosed_fence_fails() {
        fenced_blocks("```yaml\na: 1\n");
    }
}
