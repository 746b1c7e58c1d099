//! Parses the argv containerd passes, with Go `flag` package conventions
//! (`-flag value`, `--flag value`, `-flag=value`). Anything else is an error.

use std::ffi::OsString;

/// The three values containerd passes.
#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    /// `-name`: the reference as the user gave it.
    pub name: String,
    /// `-digest`: the resolved top-level digest.
    pub digest: String,
    /// `-stdin-media-type`: what stdin holds.
    pub media_type: String,
}

/// Longest single argument accepted.
const MAX_ARG_BYTES: usize = 4096;
/// Most arguments accepted.
const MAX_ARGS: usize = 16;

pub fn parse(argv: &[OsString]) -> Result<Args, String> {
    if argv.len() > MAX_ARGS {
        return Err(format!("{} arguments, expected 6", argv.len()));
    }
    let mut name = None;
    let mut digest = None;
    let mut media_type = None;
    let mut i = 0;
    while i < argv.len() {
        let arg = argv[i].to_str().ok_or("an argument is not valid UTF-8")?;
        if arg.len() > MAX_ARG_BYTES {
            return Err(format!("an argument is longer than {MAX_ARG_BYTES} bytes"));
        }
        let flag = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|f| !f.is_empty())
            .ok_or_else(|| format!("unexpected argument {arg:?}"))?;
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (flag, None),
        };
        let slot = match flag {
            "name" => &mut name,
            "digest" => &mut digest,
            "stdin-media-type" => &mut media_type,
            other => return Err(format!("unknown flag -{other}")),
        };
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                let v = argv.get(i).ok_or_else(|| format!("flag -{flag} needs a value"))?;
                let v = v.to_str().ok_or_else(|| format!("value of -{flag} is not valid UTF-8"))?;
                if v.len() > MAX_ARG_BYTES {
                    return Err(format!("value of -{flag} is longer than {MAX_ARG_BYTES} bytes"));
                }
                v.to_string()
            }
        };
        if slot.replace(value).is_some() {
            return Err(format!("flag -{flag} given twice"));
        }
        i += 1;
    }
    Ok(Args {
        name: name.ok_or("missing -name")?,
        digest: digest.ok_or("missing -digest")?,
        media_type: media_type.ok_or("missing -stdin-media-type")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<Args, String> {
        parse(&v.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn containerd_shape() {
        let a = p(&["-name", "a:1", "-digest", "sha256:x", "-stdin-media-type", "m"]).unwrap();
        assert_eq!(a, Args { name: "a:1".into(), digest: "sha256:x".into(), media_type: "m".into() });
        let b = p(&["--name=a:1", "-digest=sha256:x", "--stdin-media-type", "m"]).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rejects() {
        assert_eq!(p(&["-name", "a", "-digest", "d"]).unwrap_err(), "missing -stdin-media-type");
        assert!(
            p(&["-name", "a", "-digest", "d", "-stdin-media-type", "m", "-x", "y"])
                .unwrap_err()
                .contains("unknown flag -x")
        );
        assert!(p(&["-name"]).unwrap_err().contains("needs a value"));
        assert!(p(&["-name", "a", "-name", "b"]).unwrap_err().contains("twice"));
        assert!(p(&["stray"]).unwrap_err().contains("unexpected argument"));
        assert!(p(&["-"]).is_err());
    }
}
