//! Labellings other than the class folders: the pneumonia subtype read from Kermany file names
//! (`--labels subtype`), and a `path,label` table (`--labels FILE.csv`).
//!
//! Imports the parent's types (`super::{Item, files, ...}`), the class names of `model`
//! and `std` only.

use super::files::not_an_image;
use super::{DataError, Item, Skipped, Split, Subtype};
use crate::model::{ClassNames, Label};
use std::collections::{BTreeSet, HashSet};
use std::path::{Component, Path, PathBuf};

/// Where the labels of a dataset come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Labelling {
    /// The class folder names (the Kermany layout: NORMAL, PNEUMONIA).
    #[default]
    Folders,
    /// The Kermany layout with PNEUMONIA split by file name: BACTERIA, NORMAL, VIRUS.
    Subtype,
    /// A `path,label` table, paths relative to the dataset root.
    Csv(PathBuf),
}

impl Labelling {
    /// `folders`, `subtype`, or a path to a `.csv` file.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "folders" | "binary" => Ok(Self::Folders),
            "subtype" => Ok(Self::Subtype),
            p if p.to_ascii_lowercase().ends_with(".csv") => Ok(Self::Csv(PathBuf::from(p))),
            other => Err(format!(
                "labels {other:?}: expected folders, subtype, or a FILE.csv of path,label rows"
            )),
        }
    }
    /// A short name for reports and cache notes.
    pub fn describe(&self) -> String {
        match self {
            Self::Folders => "folders".into(),
            Self::Subtype => "subtype".into(),
            Self::Csv(p) => p.display().to_string(),
        }
    }
}

/// The three classes of `--labels subtype`, sorted as every labelling's classes are.
pub fn subtype_classes() -> ClassNames {
    ClassNames::sorted(vec!["BACTERIA".into(), "NORMAL".into(), "VIRUS".into()])
        .expect("three distinct names")
}

/// `--labels subtype` needs the folders NORMAL and PNEUMONIA.
pub(super) fn check_kermany(root: &Path, folders: &ClassNames) -> Result<(), DataError> {
    if *folders == ClassNames::binary() {
        Ok(())
    } else {
        Err(DataError::SubtypeNeedsKermany {
            root: root.to_path_buf(),
            found: folders.to_string(),
        })
    }
}

/// The subtype label of a file in class folder `class`, or why it has none.
pub(super) fn subtype_label(class: &str, path: &Path) -> Result<Label, String> {
    let classes = subtype_classes();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let label = |n: &str| classes.label_of(n).expect("a subtype class");
    if class == "NORMAL" {
        return Ok(label("NORMAL"));
    }
    match Subtype::from_file_name(super::Class::Pneumonia, &name) {
        Subtype::Bacteria => Ok(label("BACTERIA")),
        Subtype::Virus => Ok(label("VIRUS")),
        _ => Err("pneumonia file whose name says neither bacteria nor virus \
                  (--labels subtype needs one of them)"
            .into()),
    }
}

/// One row of a label table.
struct Row {
    line: usize,
    path: PathBuf,
    label: String,
}

/// Reads `file` (`path,label` rows, header optional): the classes (the labels sorted), the
/// items and the report lines. A malformed row is an error naming the file and line; a listed file that is
/// missing or not an image is a report line naming them.
pub(super) fn from_csv(
    root: &Path,
    file: &Path,
) -> Result<(ClassNames, Vec<Item>, Vec<Skipped>), DataError> {
    let text = std::fs::read_to_string(file).map_err(|source| DataError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let rows = parse_rows(file, &text)?;
    let names: BTreeSet<String> = rows.iter().map(|r| r.label.clone()).collect();
    let classes =
        ClassNames::sorted(names.into_iter().collect()).map_err(|source| DataError::Classes {
            root: file.to_path_buf(),
            source,
        })?;
    let (mut items, mut skipped) = (Vec::new(), Vec::new());
    for row in rows {
        let path = root.join(&row.path);
        if let Some(reason) = not_an_image(&path) {
            skipped.push(Skipped {
                path,
                reason: format!("{} line {}: {reason}", file.display(), row.line),
            });
            continue;
        }
        let split = match row
            .path
            .components()
            .find(|c| matches!(c, Component::Normal(_)))
        {
            Some(Component::Normal(c)) => Split::FOLDERS
                .into_iter()
                .find(|s| c == s.folder())
                .unwrap_or(Split::Single),
            _ => Split::Single,
        };
        let label = classes.label_of(&row.label).expect("a listed label");
        items.push(Item { path, split, label });
    }
    Ok((classes, items, skipped))
}

fn parse_rows(file: &Path, text: &str) -> Result<Vec<Row>, DataError> {
    let bad = |line: usize, reason: String| DataError::LabelsCsv {
        file: file.to_path_buf(),
        line,
        reason,
    };
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        // The label is after the last comma: a path may hold commas, a label may not.
        let Some((path, label)) = raw.rsplit_once(',') else {
            return Err(bad(line, format!("{raw:?}: expected path,label")));
        };
        let (path, label) = (path.trim(), label.trim());
        if rows.is_empty()
            && path.eq_ignore_ascii_case("path")
            && label.eq_ignore_ascii_case("label")
        {
            continue;
        }
        if path.is_empty() || label.is_empty() {
            return Err(bad(line, format!("{raw:?}: empty path or label")));
        }
        let p = PathBuf::from(path);
        if !p
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(bad(
                line,
                format!("path {path:?} must be relative to the data root, without ..",),
            ));
        }
        if !seen.insert(p.clone()) {
            return Err(bad(line, format!("path {path:?} is listed twice")));
        }
        rows.push(Row {
            line,
            path: p,
            label: label.to_string(),
        });
    }
    Ok(rows)
}
