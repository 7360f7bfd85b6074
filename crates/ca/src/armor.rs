//! PEM armor. CSRs come from the network, so they are read strictly: one block and nothing but
//! whitespace around it. Operator files (the CA certificate and key) are read leniently,
//! because `openssl` writes extra blocks (`EC PARAMETERS`) and text dumps next to the PEM.

/// The DER inside `input`, which must be exactly one `label` block with only whitespace
/// around it.
pub(crate) fn strict_block(input: &str, label: &str) -> Result<Vec<u8>, String> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err("it is empty".to_string());
    }
    let mut blocks = pem::parse_many(trimmed).map_err(|e| format!("invalid PEM: {e}"))?;
    let block = match blocks.len() {
        0 => return Err(format!("no `-----BEGIN {label}-----` block found")),
        1 => blocks.remove(0),
        n => return Err(format!("found {n} PEM blocks; send exactly one")),
    };
    if block.tag() != label {
        return Err(format!("found a `{}` block instead", block.tag()));
    }
    if !trimmed.starts_with("-----BEGIN ") {
        return Err("unexpected text before the PEM block".to_string());
    }
    if !trimmed.ends_with(&format!("-----END {label}-----")) {
        return Err("unexpected text after the PEM block".to_string());
    }
    Ok(block.into_contents())
}

/// All blocks in `input` labelled `label`, ignoring other blocks and text.
pub(crate) fn blocks_labelled(input: &str, label: &str) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(input).map_err(|e| format!("invalid PEM: {e}"))?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == label)
        .map(pem::Pem::into_contents)
        .collect())
}

/// Every block's label, in order (for error messages).
pub(crate) fn labels(input: &str) -> Vec<String> {
    pem::parse_many(input)
        .map(|blocks| blocks.iter().map(|b| b.tag().to_string()).collect())
        .unwrap_or_default()
}

/// Encodes `der` as one PEM block.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
