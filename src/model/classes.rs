//! The classes a model tells apart: their names in label order ([`ClassNames`]) and a label
//! index into them ([`Label`]). Here, at the bottom of the engine, because the dataset import,
//! training, checkpoints and prediction all speak of them. Imports `serde` only.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Most classes a labelling may have: labels are stored as one byte per image.
pub const MAX_CLASSES: usize = 256;

/// The index of an image's class in its [`ClassNames`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Label(pub u8);

impl Label {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Class names in label order: label `i` is `names[i]`. At least two, distinct, none empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct ClassNames(Vec<String>);

/// Why a list of names cannot be a set of classes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassNamesError {
    #[error("{0} class(es) ({1}): at least two are needed")]
    TooFew(usize, String),
    #[error("{0} classes: at most {MAX_CLASSES} are supported")]
    TooMany(usize),
    #[error("class {0:?} appears twice")]
    Duplicate(String),
    #[error("a class name is empty")]
    Empty,
}

/// The two classes of the Kermany layout, in the order every binary result uses.
pub const BINARY: [&str; 2] = ["NORMAL", "PNEUMONIA"];

impl ClassNames {
    /// Names in the given order (checked: two or more, distinct, none empty).
    pub fn new(names: Vec<String>) -> Result<Self, ClassNamesError> {
        if names.len() < 2 {
            return Err(ClassNamesError::TooFew(names.len(), names.join(", ")));
        }
        if names.len() > MAX_CLASSES {
            return Err(ClassNamesError::TooMany(names.len()));
        }
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() {
                return Err(ClassNamesError::Empty);
            }
            if names[..i].contains(n) {
                return Err(ClassNamesError::Duplicate(n.clone()));
            }
        }
        Ok(Self(names))
    }
    /// The names sorted (the order folder and table labellings use).
    pub fn sorted(mut names: Vec<String>) -> Result<Self, ClassNamesError> {
        names.sort();
        names.dedup();
        Self::new(names)
    }
    /// NORMAL, PNEUMONIA: the Kermany layout, and what a checkpoint without names means.
    pub fn binary() -> Self {
        Self(BINARY.iter().map(|s| s.to_string()).collect())
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Never true (there are at least two classes); for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn is_binary(&self) -> bool {
        self.0.len() == 2
    }
    pub fn names(&self) -> &[String] {
        &self.0
    }
    /// The name of `label`, `?` for a label beyond the classes.
    pub fn name(&self, label: Label) -> &str {
        self.0.get(label.index()).map(String::as_str).unwrap_or("?")
    }
    pub fn label_of(&self, name: &str) -> Option<Label> {
        self.0
            .iter()
            .position(|n| n == name)
            .map(|i| Label(i as u8))
    }
    pub fn labels(&self) -> impl Iterator<Item = Label> {
        (0..self.0.len()).map(|i| Label(i as u8))
    }
}

impl Default for ClassNames {
    fn default() -> Self {
        Self::binary()
    }
}

impl TryFrom<Vec<String>> for ClassNames {
    type Error = ClassNamesError;
    fn try_from(v: Vec<String>) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<ClassNames> for Vec<String> {
    fn from(c: ClassNames) -> Vec<String> {
        c.0
    }
}

impl fmt::Display for ClassNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_sorted() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = ClassNames::sorted(s(&["fox", "cat", "dog"])).unwrap();
        assert_eq!(c.names(), s(&["cat", "dog", "fox"]));
        assert_eq!(c.label_of("dog"), Some(Label(1)));
        assert_eq!(c.name(Label(2)), "fox");
        assert_eq!(c.name(Label(9)), "?");
        assert_eq!(ClassNames::binary().names(), s(&["NORMAL", "PNEUMONIA"]));
        assert!(ClassNames::new(s(&["a"])).is_err());
        assert!(ClassNames::new(s(&["a", "a"])).is_err());
        assert!(ClassNames::new(s(&["a", ""])).is_err());
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"["cat","dog","fox"]"#);
        assert!(serde_json::from_str::<ClassNames>(r#"["x"]"#).is_err());
    }
}
