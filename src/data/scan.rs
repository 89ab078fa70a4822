//! Walks a dataset root and lists labelled image files. The classes are the folder names under
//! each split (`ROOT/{train,test,val}/<CLASS>/`, or `ROOT/<CLASS>/`), sorted, or come from a
//! [`Labelling`] other than the folders. Problems with single entries become report lines; only
//! a missing root, no images at all, or an unusable labelling is an error.
//!
//! Imports the parent's types and siblings (`super::{Item, files, labels, ...}`), the class
//! names of `model` and `std` only.

use super::files::not_an_image;
use super::labels::{self, Labelling};
use super::{DataError, Item, Skipped, Split};
use crate::model::{ClassNames, Label};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The files found under a root, their classes, and the entries skipped with their reasons.
#[derive(Debug, Clone, Default)]
pub struct DatasetIndex {
    pub root: PathBuf,
    /// Label `i` of an item is `classes.names()[i]`.
    pub classes: ClassNames,
    pub items: Vec<Item>,
    pub skipped: Vec<Skipped>,
}

/// [`scan_with`] the class folders as labels.
pub fn scan(root: &Path) -> Result<DatasetIndex, DataError> {
    scan_with(root, &Labelling::Folders)
}

/// Lists the images under `root`, labelled by `labelling`. Items come sorted by split, label
/// and path so every run sees the same order (the seeded train/validation split depends on it).
pub fn scan_with(root: &Path, labelling: &Labelling) -> Result<DatasetIndex, DataError> {
    if !root.is_dir() {
        return Err(DataError::MissingRoot(root.to_path_buf()));
    }
    let mut index = DatasetIndex {
        root: root.to_path_buf(),
        ..Default::default()
    };
    let splits = split_folders(root, &mut index.skipped);
    match labelling {
        Labelling::Csv(file) => {
            let (classes, items, skipped) = labels::from_csv(root, file)?;
            index.classes = classes;
            index.items = items;
            index.skipped.extend(skipped);
        }
        Labelling::Folders | Labelling::Subtype => {
            let folders = folder_classes(root, &splits, &mut index.skipped)?;
            if *labelling == Labelling::Subtype {
                labels::check_kermany(root, &folders)?;
                index.classes = labels::subtype_classes();
            } else {
                index.classes = folders.clone();
            }
            for (split, dir) in &splits {
                scan_split(dir, *split, &folders, labelling, &mut index);
            }
        }
    }
    if index.items.is_empty() {
        return Err(DataError::NoImages(root.to_path_buf()));
    }
    index
        .items
        .sort_by(|a, b| (a.split, a.label, &a.path).cmp(&(b.split, b.label, &b.path)));
    Ok(index)
}

/// The split folders to walk: train/, test/ and val/ where any exists (a missing one
/// reported), else the root itself as [`Split::Single`].
fn split_folders(root: &Path, skipped: &mut Vec<Skipped>) -> Vec<(Split, PathBuf)> {
    let has_split_folders = Split::FOLDERS
        .iter()
        .any(|s| root.join(s.folder()).is_dir());
    if !has_split_folders {
        return vec![(Split::Single, root.to_path_buf())];
    }
    let mut out = Vec::new();
    for split in Split::FOLDERS {
        let dir = root.join(split.folder());
        if dir.is_dir() {
            out.push((split, dir));
        } else {
            skipped.push(Skipped {
                path: dir,
                reason: "missing split folder".into(),
            });
        }
    }
    out
}

/// The classes the folders name: every folder under any split (hidden ones aside), sorted. A
/// Kermany layout (NORMAL/ and PNEUMONIA/, or only one of them) is always NORMAL, PNEUMONIA.
fn folder_classes(
    root: &Path,
    splits: &[(Split, PathBuf)],
    skipped: &mut Vec<Skipped>,
) -> Result<ClassNames, DataError> {
    let mut found = BTreeSet::new();
    for (_, dir) in splits {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            match entry.file_name().to_str() {
                Some(name) if name.starts_with('.') => {}
                Some(name) => {
                    found.insert(name.to_string());
                }
                None => skipped.push(Skipped {
                    path,
                    reason: "class folder name is not UTF-8".into(),
                }),
            }
        }
    }
    if found.is_empty() {
        return Err(DataError::NoImages(root.to_path_buf()));
    }
    let binary = ClassNames::binary();
    if found.iter().all(|f| binary.label_of(f).is_some()) {
        return Ok(binary);
    }
    ClassNames::sorted(found.into_iter().collect()).map_err(|source| DataError::Classes {
        root: root.to_path_buf(),
        source,
    })
}

fn scan_split(
    dir: &Path,
    split: Split,
    folders: &ClassNames,
    labelling: &Labelling,
    index: &mut DatasetIndex,
) {
    for (i, class) in folders.names().iter().enumerate() {
        let class_dir = dir.join(class);
        if !class_dir.is_dir() {
            index.skipped.push(Skipped {
                path: class_dir,
                reason: format!("missing class folder {class} (no {class} images in this split)"),
            });
            continue;
        }
        let entries = match fs::read_dir(&class_dir) {
            Ok(e) => e,
            Err(e) => {
                index.skipped.push(Skipped {
                    path: class_dir,
                    reason: format!("unreadable folder: {e}"),
                });
                continue;
            }
        };
        let before = index.items.len();
        let mut paths: Vec<PathBuf> = Vec::new();
        for entry in entries {
            match entry {
                Ok(e) => paths.push(e.path()),
                Err(e) => index.skipped.push(Skipped {
                    path: class_dir.clone(),
                    reason: format!("unreadable folder entry: {e}"),
                }),
            }
        }
        paths.sort();
        let folder_label = Label(i as u8);
        for path in paths {
            if let Some(reason) = not_an_image(&path) {
                index.skipped.push(Skipped { path, reason });
                continue;
            }
            let label = match labelling {
                Labelling::Subtype => match labels::subtype_label(class, &path) {
                    Ok(l) => l,
                    Err(reason) => {
                        index.skipped.push(Skipped { path, reason });
                        continue;
                    }
                },
                _ => folder_label,
            };
            index.items.push(Item { path, split, label });
        }
        if index.items.len() == before {
            index.skipped.push(Skipped {
                path: class_dir,
                reason: "empty folder: no images".into(),
            });
        }
    }
}
