//! An error and its causes as text: the one way the crate (and the CLI) renders an error chain.

/// The error's message, then each cause's, outermost first. A message already in the list is left out: wrappers
/// often repeat their source's text.
pub fn messages(err: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(cause) = cur {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push(text);
        }
        cur = cause.source();
    }
    out
}

/// [`messages`] on one line, joined with `: `.
pub fn one_line(err: &dyn std::error::Error) -> String {
    messages(err).join(": ")
}

/// Whether the error or one of its causes is an [`std::io::Error`] of `kind`.
pub fn has_io_kind(err: &(dyn std::error::Error + 'static), kind: std::io::ErrorKind) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == kind)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The hint for a file or directory of the image cache that went missing while thv-sandbox wrote it.
pub(crate) const CACHE_VANISHED_HINT: &str = "part of the image cache went missing while thv-sandbox was writing \
    it (did something remove the cache directory, or files in it, meanwhile?); nothing half-written was kept: run \
    again, and what is missing is fetched and unpacked afresh";

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct E {
        text: &'static str,
        #[source]
        source: Option<Box<E>>,
    }

    fn e(text: &'static str, source: Option<E>) -> E {
        E {
            text,
            source: source.map(Box::new),
        }
    }

    #[test]
    fn outermost_first_without_repeats() {
        let err = e(
            "pull failed",
            Some(e("io", Some(e("io", Some(e("EACCES", None)))))),
        );
        assert_eq!(messages(&err), ["pull failed", "io", "EACCES"]);
        assert_eq!(one_line(&err), "pull failed: io: EACCES");
        assert_eq!(one_line(&e("alone", None)), "alone");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn io_kinds_are_found_anywhere_in_the_chain() {
        let gone = Outer(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(has_io_kind(&gone, std::io::ErrorKind::NotFound));
        assert!(!has_io_kind(&gone, std::io::ErrorKind::PermissionDenied));
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(has_io_kind(&io, std::io::ErrorKind::PermissionDenied));
        assert!(!has_io_kind(
            &e("no io", None),
            std::io::ErrorKind::NotFound
        ));
    }
}
