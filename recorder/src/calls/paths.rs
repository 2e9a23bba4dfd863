//! Lexical path rules: joining a relative path to its base and normalizing `.`, `..` and
//! repeated `/` without consulting the filesystem (a `..` after a symlink is taken literally).

use std::path::Path;

/// `base` joined with the relative `path`, as the kernel would look it up.
pub fn join(base: &str, path: &str) -> String {
    Path::new(base).join(path).to_string_lossy().into_owned()
}

/// Removes `.` and `..` components and repeated or trailing `/` lexically, as the kernel
/// walks them when no symlink is involved (`..` at the root stays at the root).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}
