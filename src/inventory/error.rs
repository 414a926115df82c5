//! Inventory errors: where (file, line, column, key path), what, and a hint.

use std::fmt;
use std::path::PathBuf;

use super::node::Pos;

/// An inventory that cannot be used, with everything needed to find and fix the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InventoryError {
    pub file: PathBuf,
    pub pos: Pos,
    /// Dotted key path, e.g. `stages.production.hosts.web-2.port`; empty for the document root.
    pub key_path: String,
    pub message: String,
    pub hint: Option<String>,
    /// The source line the error points at, for a caret display.
    pub source_line: Option<String>,
}

impl InventoryError {
    /// Where and what, with the line and a caret, without the hint.
    pub fn located(&self) -> String {
        let mut s = self.to_string();
        if let Some(hint) = &self.hint {
            let tail = format!("\n  hint: {hint}");
            if let Some(cut) = s.strip_suffix(&tail) {
                s = cut.to_owned();
            }
        }
        s
    }
}

impl From<InventoryError> for crate::error::Error {
    fn from(e: InventoryError) -> Self {
        let mut out = crate::error::Error::usage(e.located());
        out.at = Some(Box::new(crate::error::Location {
            file: e.file.display().to_string(),
            line: e.pos.line,
            column: e.pos.column,
            key: e.key_path.clone(),
        }));
        out.hint = e.hint;
        out
    }
}

impl fmt::Display for InventoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.pos.line > 0 {
            write!(f, ":{}:{}", self.pos.line, self.pos.column)?;
        }
        if self.key_path.is_empty() {
            write!(f, ": {}", self.message)?;
        } else {
            write!(f, ": {}: {}", self.key_path, self.message)?;
        }
        if let Some(line) = &self.source_line {
            let gutter = self.pos.line.to_string();
            let pad = " ".repeat(gutter.len());
            let caret_pad = " ".repeat(self.pos.column.saturating_sub(1) as usize);
            write!(f, "\n {pad} |\n {gutter} | {line}\n {pad} | {caret_pad}^")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// The valid key closest to `typo` (by edit distance), if any is close enough to be a likely typo.
pub fn nearest<'a>(typo: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (typo.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (edit_distance(&typo.to_lowercase(), c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["address", "port", "user", "deploy_to"];
        assert_eq!(nearest("prot", &keys), Some("port"));
        assert_eq!(nearest("deploy-to", &keys), Some("deploy_to"));
        assert_eq!(nearest("adress", &keys), Some("address"));
        assert_eq!(nearest("completely_else", &keys), None);
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
