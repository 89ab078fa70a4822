//! Walks a dataset root in the Kermany layout and lists labelled image files. Problems with
//! single entries become report lines; only a missing root or no images at all is an error.
//!
//! Imports the parent's types (`super::{Class, Item, ...}`) and `std` only; no other engine
//! module.

use super::{Class, DataError, Item, Skipped, Split, Subtype};
use std::fs;
use std::path::{Path, PathBuf};

/// The files found under a root, and the entries skipped with their reasons.
#[derive(Debug, Clone, Default)]
pub struct DatasetIndex {
    pub root: PathBuf,
    pub items: Vec<Item>,
    pub skipped: Vec<Skipped>,
}

const IMAGE_EXTENSIONS: [&str; 4] = ["jpeg", "jpg", "png", "dcm"];

pub fn is_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// Lists the images under `root`. Items come sorted by split, class and path so every run sees
/// the same order (the seeded train/validation split depends on it).
pub fn scan(root: &Path) -> Result<DatasetIndex, DataError> {
    if !root.is_dir() {
        return Err(DataError::MissingRoot(root.to_path_buf()));
    }
    let mut index = DatasetIndex {
        root: root.to_path_buf(),
        ..Default::default()
    };
    let has_split_folders = Split::FOLDERS
        .iter()
        .any(|s| root.join(s.folder()).is_dir());
    if has_split_folders {
        for split in Split::FOLDERS {
            let dir = root.join(split.folder());
            if !dir.is_dir() {
                index.skipped.push(Skipped {
                    path: dir,
                    reason: "missing split folder".into(),
                });
                continue;
            }
            scan_split(&dir, split, &mut index);
        }
    } else {
        scan_split(root, Split::Single, &mut index);
    }
    if index.items.is_empty() {
        return Err(DataError::NoImages(root.to_path_buf()));
    }
    index
        .items
        .sort_by(|a, b| (a.split, a.class, &a.path).cmp(&(b.split, b.class, &b.path)));
    Ok(index)
}

fn scan_split(dir: &Path, split: Split, index: &mut DatasetIndex) {
    for class in Class::ALL {
        let class_dir = dir.join(class.folder());
        if !class_dir.is_dir() {
            index.skipped.push(Skipped {
                path: class_dir,
                reason: format!(
                    "missing class folder {} (no {class} images in this split)",
                    class.folder()
                ),
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
        for path in paths {
            // fs::metadata follows symlinks, so a symlink loop or dangling link fails here.
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    index.skipped.push(Skipped {
                        path,
                        reason: format!("unreadable: {e}"),
                    });
                    continue;
                }
            };
            if meta.is_dir() {
                index.skipped.push(Skipped {
                    path,
                    reason: "is a folder; class folders hold image files directly".into(),
                });
                continue;
            }
            if !is_image_extension(&path) {
                index.skipped.push(Skipped {
                    path,
                    reason: "not an image (expected .jpeg, .jpg, .png or .dcm)".into(),
                });
                continue;
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            index.items.push(Item {
                subtype: Subtype::from_file_name(class, &name),
                path,
                split,
                class,
            });
        }
        if index.items.len() == before {
            index.skipped.push(Skipped {
                path: class_dir,
                reason: "empty folder: no images".into(),
            });
        }
    }
}
