//! `oci:PATH[:TAG]` references to image layouts on disk.

use std::path::PathBuf;

use super::LayoutError;

/// Split `oci:PATH[:TAG]` into the layout directory and the tag.
///
/// PATH may itself contain `:`. The text after the LAST `:` is taken as the tag only when it is
/// a valid tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`, so never containing `/`) and something is
/// left before it; otherwise the whole remainder is the path. So `oci:/srv/img:v1` is
/// (`/srv/img`, `v1`), `oci:/srv/a:b/img` is (`/srv/a:b/img`, none), and a directory whose own
/// name contains `:` is written with a trailing `/`: `oci:/srv/img:v1/` is (`/srv/img:v1/`, none).
pub fn parse_oci_ref(s: &str) -> Result<(PathBuf, Option<String>), LayoutError> {
    let invalid = |reason| LayoutError::InvalidOciRef {
        input: s.chars().take(200).collect(),
        reason,
    };
    let rest = s
        .strip_prefix("oci:")
        .ok_or_else(|| invalid("it must start with `oci:`"))?;
    if rest.is_empty() {
        return Err(invalid("the layout directory is missing"));
    }
    if let Some((path, tag)) = rest.rsplit_once(':') {
        if !path.is_empty() && is_valid_tag(tag) {
            return Ok((PathBuf::from(path), Some(tag.to_owned())));
        }
    }
    Ok((PathBuf::from(rest), None))
}

/// The tag grammar of the distribution spec: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub(crate) fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphanumeric() || *first == b'_')
                && rest.len() <= 127
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (String, Option<String>) {
        let (path, tag) = parse_oci_ref(s).unwrap();
        (path.to_str().unwrap().to_owned(), tag)
    }

    #[test]
    fn path_only_and_path_with_tag() {
        assert_eq!(ok("oci:/srv/img"), ("/srv/img".into(), None));
        assert_eq!(ok("oci:img"), ("img".into(), None));
        assert_eq!(
            ok("oci:/srv/img:v1.2_3-rc"),
            ("/srv/img".into(), Some("v1.2_3-rc".into()))
        );
        assert_eq!(
            ok("oci:./img:latest"),
            ("./img".into(), Some("latest".into()))
        );
    }

    #[test]
    fn colons_inside_the_path() {
        // What follows the last ':' contains '/': not a tag.
        assert_eq!(ok("oci:/srv/a:b/img"), ("/srv/a:b/img".into(), None));
        assert_eq!(
            ok("oci:/srv/a:b/img:v2"),
            ("/srv/a:b/img".into(), Some("v2".into()))
        );
        // The trailing-slash escape for a directory named `img:v1`.
        assert_eq!(ok("oci:/srv/img:v1/"), ("/srv/img:v1/".into(), None));
        // An empty tag, or one starting with '.' or '-', is not a tag.
        assert_eq!(ok("oci:/srv/img:"), ("/srv/img:".into(), None));
        assert_eq!(ok("oci:/srv/img:.x"), ("/srv/img:.x".into(), None));
        assert_eq!(ok("oci:/srv/img:-x"), ("/srv/img:-x".into(), None));
        // Nothing before the colon: the whole thing is the path.
        assert_eq!(ok("oci::v1"), (":v1".into(), None));
        // A tag longer than 128 characters is not a tag.
        let long = format!("oci:/srv/img:{}", "a".repeat(129));
        assert_eq!(ok(&long).1, None);
        let max = format!("oci:/srv/img:{}", "a".repeat(128));
        assert_eq!(ok(&max).1.map(|t| t.len()), Some(128));
    }

    #[test]
    fn rejects_other_schemes_and_empty_paths() {
        let err = parse_oci_ref("docker://alpine").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid image reference \"docker://alpine\": it must start with `oci:`"
        );
        let err = parse_oci_ref("oci:").unwrap_err();
        assert!(
            err.to_string().contains("the layout directory is missing"),
            "{err}"
        );
    }
}
