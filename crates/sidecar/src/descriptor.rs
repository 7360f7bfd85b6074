//! Reading `meshplane.yaml`: validated (so a bad descriptor stops the sidecar before Envoy
//! starts) and kept as written (so node metadata carries exactly the user's keys and values).

use std::path::{Path, PathBuf};

use meshplane_model::{Descriptor, DescriptorError};
use serde_json::Value;

/// A descriptor both validated and as written.
#[derive(Debug, Clone)]
pub struct LoadedDescriptor {
    /// The validated descriptor.
    pub descriptor: Descriptor,
    /// The document as written, converted to JSON (integers stay integers).
    pub written: Value,
}

/// Why the descriptor cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read the descriptor {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The descriptor is invalid; the error names the field.
    #[error("invalid descriptor {path}: {error}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        error: DescriptorError,
    },
    /// On reload (SIGHUP), the descriptor names another service.
    #[error(
        "{path}: `service` changed from `{was}` to `{now}`; a sidecar serves one service: restart it instead"
    )]
    ServiceChanged {
        /// The file.
        path: PathBuf,
        /// The service at start.
        was: String,
        /// The service in the file now.
        now: String,
    },
}

/// Reads and validates the descriptor at `path`.
pub fn load(path: &Path) -> Result<LoadedDescriptor, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::Read {
        path: path.to_owned(),
        error,
    })?;
    parse(path, &text)
}

/// Validates `text` (read from `path`, named in errors).
pub fn parse(path: &Path, text: &str) -> Result<LoadedDescriptor, LoadError> {
    let invalid = |error| LoadError::Invalid {
        path: path.to_owned(),
        error,
    };
    let descriptor = Descriptor::from_yaml(text).map_err(invalid)?;
    // Valid for the model means a YAML mapping with string keys (and no `admin` or `address`
    // key, which the sidecar adds): this cannot fail in practice, but is reported rather than assumed.
    let written: Value = serde_norway::from_str(text).map_err(|e| {
        invalid(DescriptorError::Syntax {
            format: "YAML",
            message: e.to_string(),
        })
    })?;
    Ok(LoadedDescriptor {
        descriptor,
        written,
    })
}
