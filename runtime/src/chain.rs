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
}
