//! Entry points for the fuzz targets in `fuzz/` only: two internals of this module that have no
//! public path of their own. Not an API; hidden from the docs.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::TunnelConfigError;
use crate::domain::{Flavour, User};

/// The comment blanker [`super::parse`] and [`super::persist_clients`] run before serde_json.
pub fn blank_comments(text: &str) -> Cow<'_, str> {
    super::jsonc::blank_comments(text)
}

/// The in-memory step of [`super::persist_clients`]: sets the clients of the inbounds named in
/// `wanted` inside the parsed document `root`, or leaves `root` as it was and says why.
pub fn merge_clients(
    root: &mut Value,
    wanted: &BTreeMap<String, Vec<User>>,
    flavour: Flavour,
) -> Result<(), TunnelConfigError> {
    super::merge::merge(root, wanted, flavour).map_err(|e| super::merge_err(Path::new(""), e))
}
