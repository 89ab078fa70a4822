//! A party's model share on disk: `<key file>.model-share`, written atomically with mode 0600
//! (a share is secret: two of them reveal the model), read back when the party restarts. A
//! stored share that group or others may read is refused, as the party's key is.
//!
//! Imports `crate::{atomic, mpc, net}` and the parent's `PartyError`; never `pipeline` or
//! terminal code.

use std::path::{Path, PathBuf};

use super::PartyError;
use crate::mpc::PartyModel;
use crate::net::keys::{read_secret_file, SecretReadError};
use crate::net::PartyId;

/// Where a party keeps its model share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareFile {
    path: PathBuf,
}

impl ShareFile {
    /// The file beside a party's key: the key's file name with `.model-share` appended.
    pub fn beside_key(key: &Path) -> Self {
        let mut name = key
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "party".into());
        name.push(".model-share");
        Self {
            path: key.with_file_name(name),
        }
    }

    pub fn at(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, reason: impl Into<String>) -> PartyError {
        PartyError::Store {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// The stored share of party `me`, or `None` when no model has been shared yet. A file
    /// that does not decode, or holds another party's share, is an error: serving with it
    /// would give wrong answers. So is one that group or others may access (Unix): the share
    /// may already have leaked, and a party should not go on serving with it unnoticed.
    pub fn load(&self, me: PartyId) -> Result<Option<PartyModel>, PartyError> {
        let bytes = match read_secret_file(&self.path) {
            Ok(b) => b,
            Err(SecretReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(SecretReadError::Io(e)) => return Err(self.err(format!("cannot read: {e}"))),
            Err(SecretReadError::Insecure { mode }) => {
                return Err(self.err(format!(
                    "is accessible by group or others (mode {mode:o}); a model share is \
                     secret: run `chmod 600 {}`, and if others may have read it, have the \
                     model owner run `privxray share-model` again",
                    self.path.display()
                )))
            }
        };
        let model = PartyModel::from_bytes(&bytes)
            .map_err(|e| self.err(format!("cannot decode (delete it and share again): {e}")))?;
        if model.party().get() != me.get() {
            return Err(self.err(format!(
                "holds party {}'s share, but this is party {me}",
                model.party()
            )));
        }
        Ok(Some(model))
    }

    /// Replaces the stored share atomically (a crash leaves the old share or the new one).
    pub fn save(&self, encoded: &[u8]) -> Result<(), PartyError> {
        crate::atomic::write_atomic_with_mode(&self.path, encoded, Some(0o600))
            .map_err(|e| self.err(format!("cannot write: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::random_spec;
    use crate::model::ModelKind;
    use crate::mpc::{share_model_os, FixedPoint};

    #[test]
    fn share_round_trips_and_wrong_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = ShareFile::beside_key(&dir.path().join("p1.key"));
        assert_eq!(file.path(), dir.path().join("p1.key.model-share"));
        let me = PartyId::new(1).unwrap();
        assert!(file.load(me).unwrap().is_none());
        let spec = random_spec(ModelKind::Vgg16_1, 1.0 / 32.0, 3);
        let shares = share_model_os(&spec, FixedPoint::default()).unwrap();
        file.save(&shares[1].to_bytes()).unwrap();
        assert_eq!(file.load(me).unwrap().as_ref(), Some(&shares[1]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "share readable by others: {mode:o}");
        }
        // Another party's share is refused by id.
        file.save(&shares[2].to_bytes()).unwrap();
        let err = file.load(me).unwrap_err().to_string();
        assert!(err.contains("party 2's share"), "{err}");
        // A truncated file is refused, not served.
        let bytes = shares[1].to_bytes();
        file.save(&bytes[..bytes.len() / 2]).unwrap();
        assert!(file.load(me).unwrap_err().to_string().contains("decode"));
    }

    #[cfg(unix)]
    #[test]
    fn a_share_file_readable_by_others_is_refused_with_what_to_do() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = ShareFile::beside_key(&dir.path().join("p0.key"));
        let me = PartyId::new(0).unwrap();
        let spec = random_spec(ModelKind::DnnAv, 1.0, 5);
        let shares = share_model_os(&spec, FixedPoint::default()).unwrap();
        file.save(&shares[0].to_bytes()).unwrap();
        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let err = file.load(me).unwrap_err().to_string();
            assert!(err.contains(&format!("mode {mode:o}")), "{err}");
            assert!(err.contains("chmod 600"), "{err}");
            assert!(err.contains(&file.path().display().to_string()), "{err}");
        }
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(file.load(me).unwrap().as_ref(), Some(&shares[0]));
    }

    #[test]
    fn an_old_format_share_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let file = ShareFile::beside_key(&dir.path().join("p2.key"));
        let spec = random_spec(ModelKind::DnnAv, 1.0, 6);
        let shares = share_model_os(&spec, FixedPoint::default()).unwrap();
        let mut old = shares[2].to_bytes();
        old[4] = 1; // the format version byte
        file.save(&old).unwrap();
        let err = file.load(PartyId::new(2).unwrap()).unwrap_err().to_string();
        assert!(err.contains("format version 1"), "{err}");
        assert!(err.contains("share-model"), "{err}");
    }
}
