//! Dataset import: labelled image folders (the Kermany layout or any other), their labels
//! (class folders, the pneumonia subtype, or a table), and decoding of JPEG, PNG and DICOM.
//! Imports the class names of `model`; nothing else of the engine.

pub mod decode;
pub mod files;
mod jpeg;
pub mod labels;
pub mod open;
mod pixels;
pub mod scan;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::model::{ClassNames, Label};
pub use decode::{
    decode_file, decode_file_reduced, decode_file_with, DecodeError, Decoded, Reduce,
};
pub use files::is_image_extension;
pub use labels::Labelling;
pub use open::{ImportLimits, Refusal};
pub use scan::{scan, scan_with, DatasetIndex};

/// The two classes of the Kermany layout, as the synthetic generator writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Class {
    Normal,
    Pneumonia,
}

impl Class {
    pub const ALL: [Class; 2] = [Class::Normal, Class::Pneumonia];
    pub fn folder(self) -> &'static str {
        match self {
            Class::Normal => "NORMAL",
            Class::Pneumonia => "PNEUMONIA",
        }
    }
    /// The training label: 0 NORMAL, 1 PNEUMONIA.
    pub fn label(self) -> u8 {
        self as u8
    }
    pub fn from_label(label: u8) -> Option<Class> {
        match label {
            0 => Some(Class::Normal),
            1 => Some(Class::Pneumonia),
            _ => None,
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.folder())
    }
}

/// Pneumonia subtype from the file name (`personN_bacteria_M.jpeg`, `personN_virus_M.jpeg`):
/// the labels of `--labels subtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Subtype {
    None,
    Bacteria,
    Virus,
    Unknown,
}

impl Subtype {
    pub fn from_file_name(class: Class, name: &str) -> Subtype {
        let lower = name.to_ascii_lowercase();
        match class {
            Class::Normal => Subtype::None,
            Class::Pneumonia if lower.contains("bacteria") => Subtype::Bacteria,
            Class::Pneumonia if lower.contains("virus") => Subtype::Virus,
            Class::Pneumonia => Subtype::Unknown,
        }
    }
}

/// The dataset's splits. A folder holding NORMAL/ and PNEUMONIA/ directly (such as one split
/// copied on its own, like assets/samples) is [`Split::Single`], used whole for evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Split {
    Train,
    Test,
    Val,
    /// Class folders directly under the root, with no split folders.
    Single,
}

impl Split {
    pub const FOLDERS: [Split; 3] = [Split::Train, Split::Test, Split::Val];
    pub fn folder(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Val => "val",
            Split::Single => ".",
        }
    }
    /// Whether the paper's evaluation set (test and val merged) includes this split.
    pub fn is_evaluation(self) -> bool {
        matches!(self, Split::Test | Split::Val | Split::Single)
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Single => "single",
            s => s.folder(),
        })
    }
}

/// One labelled image file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub path: PathBuf,
    pub split: Split,
    /// Index into the dataset's [`ClassNames`].
    pub label: Label,
}

/// A file or folder left out of the import, and why. One line of the import report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Serialised lossily (a report is for reading): a name that is not UTF-8 is still shown.
    #[serde(serialize_with = "serialize_path_lossy")]
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// Serialises a path as text, replacing what is not UTF-8 with U+FFFD, for reports (serde's own
/// path serialisation fails on such a name, and with it the whole report).
pub fn serialize_path_lossy<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// [`serialize_path_lossy`] for an optional path.
pub fn serialize_option_path_lossy<S: serde::Serializer>(
    path: &Option<PathBuf>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => s.serialize_some(&*p.to_string_lossy()),
        None => s.serialize_none(),
    }
}

/// The layout a dataset root must have, shown in errors (any other class folders, two or
/// more, work alike; the message keeps to the Kermany example).
pub const EXPECTED_LAYOUT: &str = "expected layout:
  ROOT/train/NORMAL/*.jpeg    ROOT/train/PNEUMONIA/*.jpeg
  ROOT/test/NORMAL/*.jpeg     ROOT/test/PNEUMONIA/*.jpeg
  ROOT/val/NORMAL/*.jpeg      ROOT/val/PNEUMONIA/*.jpeg
(or NORMAL/ and PNEUMONIA/ directly under ROOT; .jpeg, .jpg, .png and .dcm files)";

/// Errors that stop an import as a whole. Problems with single files are [`Skipped`] lines.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("dataset root {0} does not exist or is not a folder\n{EXPECTED_LAYOUT}")]
    MissingRoot(PathBuf),
    #[error("no images found under {0}\n{EXPECTED_LAYOUT}")]
    NoImages(PathBuf),
    #[error("classes of {root}: {source}")]
    Classes {
        root: PathBuf,
        source: crate::model::ClassNamesError,
    },
    #[error("{file} line {line}: {reason}")]
    LabelsCsv {
        file: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("--labels subtype needs class folders NORMAL and PNEUMONIA; {root} has {found}")]
    SubtypeNeedsKermany { root: PathBuf, found: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests;
