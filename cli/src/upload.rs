//! `--upload`: PUT writes the request body to a temporary file beside the target and
//! renames it into place once the body is complete, so a cut connection, an oversized
//! body or a failed write leaves nothing half-written (the temporary file is removed
//! when it is dropped). Answers 201 for a new file, 204 for a replaced one (as nginx's
//! WebDAV module), 409 when the parent directory is missing or the target is one, 413
//! beyond `--max-upload-size`, 412 when a precondition fails.

use std::{io::Write, os::unix::fs::PermissionsExt};

use onstream::{Headers, Stream};

use crate::{
    beneath::{self, Root},
    conditional::{self, Precondition, Validators},
    path::Target,
    site::{status_page, Sent},
};

/// Handles a PUT of `target` with a body of at most `limit` bytes.
pub async fn put(
    root: &Root,
    stream: &Stream,
    req: &Headers,
    target: &Target,
    limit: u64,
) -> onstream::Result<Sent> {
    if target.relative.as_os_str().is_empty() || target.trailing_slash {
        return status_page(stream, "PUT", 409, &[]).await;
    }
    let declared = req
        .get("content-length")
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return status_page(stream, "PUT", 413, &[]).await;
    }
    let parent = target.relative.parent().unwrap_or(&target.relative);
    if let Err(e) = root.open_dir(parent) {
        let status = if beneath::escaped(&e) || e.kind() == std::io::ErrorKind::PermissionDenied {
            403
        } else {
            409
        };
        return status_page(stream, "PUT", status, &[]).await;
    }
    let existing = match root.open(&target.relative) {
        Ok(f) => Some(f.metadata()?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) if beneath::escaped(&e) => return status_page(stream, "PUT", 403, &[]).await,
        Err(e) => return Err(e.into()),
    };
    if existing.as_ref().is_some_and(|md| !md.is_file()) {
        return status_page(stream, "PUT", 409, &[]).await;
    }
    let get = |name: &str| {
        req.get_comma_separated(name)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    let precondition = match &existing {
        Some(md) => conditional::evaluate("PUT", get, &Validators::from_metadata(md)),
        // Nothing there: If-Match (even `*`) fails, If-None-Match: * holds.
        None if req.has("if-match") => Precondition::Failed,
        None => Precondition::Proceed,
    };
    if precondition != Precondition::Proceed {
        return status_page(stream, "PUT", 412, &[]).await;
    }

    let dir = root.path().join(parent);
    let mut tmp = tempfile::Builder::new()
        .prefix(".onstream-upload-")
        .tempfile_in(&dir)?;
    let mut total: u64 = 0;
    while let Some(chunk) = stream.get_next_chunk().await? {
        total += chunk.len() as u64;
        if total > limit {
            // The temporary file goes with `tmp`; the rest of the body is the
            // connection's business (drained or the connection closed).
            return status_page(stream, "PUT", 413, &[]).await;
        }
        tmp.write_all(&chunk)?;
    }
    // tempfile creates 0600; an uploaded file should be as readable as any other.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(root.path().join(&target.relative))
        .map_err(|e| e.error)?;
    let status = if existing.is_some() { 204 } else { 201 };
    status_page(stream, "PUT", status, &[]).await
}
