//! Which files a dataset import takes: images by extension, and why any other entry is left
//! out. Imports `std` only.

use std::fs;
use std::path::Path;

const IMAGE_EXTENSIONS: [&str; 4] = ["jpeg", "jpg", "png", "dcm"];

pub fn is_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// Why `path` is not an image file to import, if it is not (unreadable, a folder, another
/// extension).
pub fn not_an_image(path: &Path) -> Option<String> {
    // fs::metadata follows symlinks, so a symlink loop or dangling link fails here.
    match fs::metadata(path) {
        Err(e) => Some(format!("unreadable: {e}")),
        Ok(m) if m.is_dir() => Some("is a folder; class folders hold image files directly".into()),
        Ok(_) if !is_image_extension(path) => {
            Some("not an image (expected .jpeg, .jpg, .png or .dcm)".into())
        }
        Ok(_) => None,
    }
}
