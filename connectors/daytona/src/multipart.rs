//! The multipart formats of `/files/bulk-upload` and `/files/bulk-download`,
//! byte-exact as the SDK and the daemon use them.

/// One part of a multipart body.
pub struct Part<'a> {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub body: &'a [u8],
}

/// An upload body for one file: the path part first (the daemon rejects a
/// file part whose path it has not seen), then the raw bytes.
pub fn upload_body(boundary: &str, path: &str, data: &[u8]) -> Vec<u8> {
    let mut body = upload_prefix(boundary, path);
    body.extend_from_slice(data);
    body.extend_from_slice(&upload_suffix(boundary));
    body
}

/// What comes before the file's bytes in an upload body: the path part and
/// the file part's headers (the daemon needs the path first).
pub fn upload_prefix(boundary: &str, path: &str) -> Vec<u8> {
    let filename = path.rsplit('/').next().unwrap_or(path).replace('"', "%22");
    format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"files[0].path\"\r\n\r\n{path}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"files[0].file\"; filename=\"{filename}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes()
}

/// What comes after the file's bytes in an upload body.
pub fn upload_suffix(boundary: &str) -> Vec<u8> {
    format!("\r\n--{boundary}--\r\n").into_bytes()
}

/// The `boundary` parameter of a `multipart/…` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.trim().split_once('=')?;
        key.trim().eq_ignore_ascii_case("boundary").then(|| value.trim().trim_matches('"').to_string())
    })
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut at = from;
    while at + needle.len() <= haystack.len() {
        match haystack[at..=haystack.len() - needle.len()].iter().position(|&b| b == first) {
            Some(offset) => {
                let start = at + offset;
                if &haystack[start..start + needle.len()] == needle {
                    return Some(start);
                }
                at = start + 1;
            }
            None => return None,
        }
    }
    None
}

/// Split a multipart body into its parts.
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, String> {
    let opening = format!("--{boundary}");
    let delimiter = format!("\r\n--{boundary}");
    let mut at = find(body, opening.as_bytes(), 0).ok_or("no opening boundary")? + opening.len();
    let mut parts = Vec::new();
    loop {
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        if !body[at..].starts_with(b"\r\n") {
            return Err("malformed boundary line".into());
        }
        at += 2;
        let head_end = find(body, b"\r\n\r\n", at).ok_or("a part has no header end")?;
        let head = String::from_utf8_lossy(&body[at..head_end]).into_owned();
        let content_start = head_end + 4;
        let content_end = find(body, delimiter.as_bytes(), content_start).ok_or("a part is not terminated")?;
        let mut part =
            Part { name: String::new(), filename: None, content_type: None, body: &body[content_start..content_end] };
        for line in head.split("\r\n") {
            let Some((key, value)) = line.split_once(':') else { continue };
            if key.trim().eq_ignore_ascii_case("content-disposition") {
                part.name = param(value, "name").unwrap_or_default();
                part.filename = param(value, "filename");
            } else if key.trim().eq_ignore_ascii_case("content-type") {
                part.content_type = Some(value.trim().to_string());
            }
        }
        parts.push(part);
        at = content_end + delimiter.len();
    }
}

/// A quoted parameter of a header value (`name="x"`), exactly as sent.
fn param(header: &str, name: &str) -> Option<String> {
    let needle = format!("{name}=\"");
    let mut search = header;
    loop {
        let at = search.find(&needle)?;
        // Skip `filename*=` when looking for `name=` and similar.
        let before = search[..at].chars().last();
        if at == 0 || matches!(before, Some(' ') | Some(';')) {
            let rest = &search[at + needle.len()..];
            return rest.find('"').map(|end| rest[..end].to_string());
        }
        search = &search[at + needle.len()..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_daemons_download_format() {
        let body = b"--DAYTONA-FILE-BOUNDARY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/home/daytona/hello.txt\"; filename*=utf-8''%2Fhome%2Fdaytona%2Fhello.txt\r\nContent-Type: application/octet-stream\r\nContent-Length: 12\r\n\r\nhello world\n\r\n--DAYTONA-FILE-BOUNDARY--\r\n";
        let parts = parse(body, "DAYTONA-FILE-BOUNDARY").unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].name, "file");
        assert_eq!(parts[0].filename.as_deref(), Some("/home/daytona/hello.txt"));
        assert_eq!(parts[0].body, b"hello world\n");
    }

    #[test]
    fn upload_round_trips_binary() {
        let data: Vec<u8> = (0..=255).collect();
        let body = upload_body("b0und", "/home/daytona/x.bin", &data);
        let parts = parse(&body, "b0und").unwrap();
        assert_eq!(parts[0].name, "files[0].path");
        assert_eq!(parts[0].body, b"/home/daytona/x.bin");
        assert_eq!(parts[1].filename.as_deref(), Some("x.bin"));
        assert_eq!(parts[1].body, &data[..]);
    }
}
