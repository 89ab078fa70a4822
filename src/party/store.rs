//! A party's model share on disk: `<key file>.model-share`, written atomically with mode 0600
//! (a share is secret: two of them reveal the model), read back when the party restarts.

use std::path::{Path, PathBuf};

use super::PartyError;
use crate::mpc::PartyModel;
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
    /// would give wrong answers.
    pub fn load(&self, me: PartyId) -> Result<Option<PartyModel>, PartyError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(format!("cannot read: {e}"))),
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
}
