//! One line for an error and its causes, each said once.
//!
//! Many error types here follow the thiserror habit of putting the cause in the message
//! (`"cannot listen on {address}: {source}"`) while also returning it from `source()`; a plain
//! walk of the chain then prints the cause twice ("Address already in use (os error 98):
//! Address already in use (os error 98)"). [`said_once`] walks the chain and leaves out a cause
//! whose text the line already holds, so every error type reads right however it is written.
//!
//! A leaf: imports `std` only; nothing of the engine or the terminal interface.

use std::error::Error;

/// The error's message, then each cause not already part of what was said, joined by ": ".
pub fn said_once(err: &(dyn Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::said_once;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on {address}: {source}")]
    struct Bind {
        address: String,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("party 0")]
    struct Party(#[source] Bind);

    fn in_use() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use")
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let e = Bind {
            address: "127.0.0.1:9000".into(),
            source: in_use(),
        };
        assert_eq!(
            said_once(&e),
            "cannot listen on 127.0.0.1:9000: Address already in use"
        );
    }

    #[test]
    fn a_cause_not_in_the_message_is_added_once() {
        let e = Party(Bind {
            address: "127.0.0.1:9000".into(),
            source: in_use(),
        });
        assert_eq!(
            said_once(&e),
            "party 0: cannot listen on 127.0.0.1:9000: Address already in use"
        );
    }
}
