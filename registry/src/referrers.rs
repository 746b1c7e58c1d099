//! Building a referrers list from registry documents that anyone able to
//! push can fill: entries are parsed one by one, unusable ones are counted
//! and skipped, and the list is bounded without letting junk listed first
//! push preferred entries out.

use crate::types::{Descriptor, Referrers, ReferrersSource};

/// Most referrer descriptors kept.
pub const MAX_REFERRERS: usize = 1024;

/// The list being gathered from one or more index documents.
pub(crate) struct ReferrerList<'a> {
    /// Only entries of this artifact type are kept (always checked here,
    /// whether or not the registry says it filtered).
    pub(crate) artifact_type: Option<&'a str>,
    prefer: &'a (dyn Fn(&Descriptor) -> bool + Sync),
    preferred: Vec<Descriptor>,
    others: Vec<Descriptor>,
    dropped: usize,
    unusable: usize,
    notes: Vec<String>,
}

#[derive(serde::Deserialize)]
struct RawIndex {
    #[serde(default)]
    manifests: Vec<serde_json::Value>,
}

impl<'a> ReferrerList<'a> {
    /// An empty list keeping entries of `artifact_type` (any when `None`).
    pub(crate) fn new(
        artifact_type: Option<&'a str>,
        prefer: &'a (dyn Fn(&Descriptor) -> bool + Sync),
    ) -> ReferrerList<'a> {
        ReferrerList {
            artifact_type,
            prefer,
            preferred: Vec::new(),
            others: Vec::new(),
            dropped: 0,
            unusable: 0,
            notes: Vec::new(),
        }
    }

    /// Records a problem with the list that did not stop it being used.
    pub(crate) fn note(&mut self, note: String) {
        tracing::info!(note = %note, "referrers list: skipping junk");
        self.notes.push(note);
    }

    /// Adds the entries of one index document (`what` names it for notes).
    /// Returns false when the document is not an index at all, so no further
    /// page should be read.
    pub(crate) fn add_index(&mut self, what: &str, bytes: &[u8]) -> bool {
        let index: RawIndex = match serde_json::from_slice(bytes) {
            Ok(i) => i,
            Err(e) => {
                self.note(format!("{what} is not an OCI index ({e}); its entries were not used"));
                return false;
            }
        };
        for value in index.manifests {
            match serde_json::from_value::<Descriptor>(value) {
                Ok(d) if pullgate_reference::Digest::parse(&d.digest).is_ok() => {
                    if self.artifact_type.is_none_or(|t| d.artifact_type.as_deref() == Some(t)) {
                        self.push(d);
                    }
                }
                _ => self.unusable += 1,
            }
        }
        true
    }

    /// Keeps `d` within [`MAX_REFERRERS`]: past the bound a preferred entry
    /// replaces the last entry kept that is not preferred (in constant time,
    /// so many preferred-looking entries cost no more than their size).
    fn push(&mut self, d: Descriptor) {
        let preferred = (self.prefer)(&d);
        if self.preferred.len() + self.others.len() < MAX_REFERRERS {
            if preferred {
                self.preferred.push(d);
            } else {
                self.others.push(d);
            }
            return;
        }
        self.dropped += 1;
        if preferred && self.others.pop().is_some() {
            self.preferred.push(d);
        }
    }

    /// The list (preferred entries first, each group in listed order), with a
    /// note for every kind of entry left out.
    pub(crate) fn finish(mut self, source: ReferrersSource) -> Referrers {
        if self.unusable > 0 {
            let n = self.unusable;
            self.note(format!("{n} referrer entries without a valid mediaType, digest and size were skipped"));
        }
        if self.dropped > 0 {
            let n = self.dropped;
            self.note(format!(
                "more than {MAX_REFERRERS} referrers ({} preferred kept first); {n} were not kept",
                self.preferred.len()
            ));
        }
        let mut descriptors = std::mem::take(&mut self.preferred);
        descriptors.append(&mut self.others);
        Referrers { descriptors, source, notes: self.notes, served_by: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize, artifact_type: &str) -> serde_json::Value {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{:064x}", i),
            "size": 100,
            "artifactType": artifact_type,
        })
    }

    fn doc(entries: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": entries})).unwrap()
    }

    #[test]
    fn unusable_entries_are_skipped_with_a_note() {
        let no_size =
            serde_json::json!({"mediaType": "m", "digest": format!("sha256:{:064x}", 9), "artifactType": "a"});
        let bad_digest =
            serde_json::json!({"mediaType": "m", "digest": "sha256:../../x", "size": 1, "artifactType": "a"});
        let prefer = |_: &Descriptor| false;
        let mut l = ReferrerList::new(Some("a"), &prefer);
        assert!(l.add_index("page", &doc(vec![no_size, entry(1, "a"), bad_digest, entry(2, "b"), "junk".into()])));
        let r = l.finish(ReferrersSource::TagSchema);
        assert_eq!(r.descriptors.len(), 1, "{:?}", r.descriptors);
        assert!(r.notes.iter().any(|n| n.starts_with("3 referrer entries")), "{:?}", r.notes);
    }

    #[test]
    fn a_document_that_is_not_an_index_is_a_note() {
        let prefer = |_: &Descriptor| false;
        let mut l = ReferrerList::new(None, &prefer);
        assert!(!l.add_index("page 1", b"<html>"));
        let r = l.finish(ReferrersSource::Api);
        assert!(r.descriptors.is_empty());
        assert!(r.notes[0].contains("page 1 is not an OCI index"), "{:?}", r.notes);
    }

    #[test]
    fn past_the_bound_preferred_entries_replace_others() {
        let special = format!("sha256:{:064x}", 5000);
        let prefer = |d: &Descriptor| d.digest == special;
        let mut l = ReferrerList::new(None, &prefer);
        let mut entries: Vec<_> = (0..MAX_REFERRERS + 100).map(|i| entry(i, "a")).collect();
        entries.push(entry(5000, "a"));
        l.add_index("index", &doc(entries));
        let r = l.finish(ReferrersSource::Api);
        assert_eq!(r.descriptors.len(), MAX_REFERRERS);
        assert!(r.descriptors.iter().any(|d| d.digest == special), "the preferred entry listed last is kept");
        assert!(r.notes.iter().any(|n| n.contains("101 were not kept")), "{:?}", r.notes);
    }
}
