//! Image references by meaning: a reference is parsed into its registry host, path
//! components, tag and digest as the container runtime reads it (the grammar of
//! distribution/reference, with Docker Hub's normalization), and an allowed prefix is
//! compared with it host to host and component by component, never as text. So
//! `registry.example.com` does not admit `registry.example.com.evil.io/x`, and
//! `registry.example.com/team` does not admit `registry.example.com/team-evil/x`.

use std::fmt;

/// Docker Hub, where a reference without a registry host is pulled from.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's older name, normalized to [`DOCKER_HUB`] as the runtime does.
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// Docker Hub's namespace of official images (`busybox` is `docker.io/library/busybox`).
const OFFICIAL: &str = "library";
/// The longest repository name (host and path), as in distribution/reference.
const MAX_NAME_BYTES: usize = 255;

/// What a path component may be, for messages.
const PATH_RULE: &str = "lowercase letters and digits, separated by '.', '_', '__' or '-'";

/// A parsed image reference, normalized as the container runtime pulls it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host, lowercased, with its port (`registry.example.com:5000`);
    /// `docker.io` when the reference names none.
    pub host: String,
    /// The repository path, one entry per component (`["library", "busybox"]`).
    pub path: Vec<String>,
    /// The tag (`1.36`), if any.
    pub tag: Option<String>,
    /// The digest (`sha256:<hex>`), if any.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses `text` (already trimmed). The error says what is wrong and what is
    /// allowed, to follow `"<image>" is not an image reference: `.
    pub fn parse(text: &str) -> Result<ImageRef, String> {
        check_characters(text)?;
        if text.is_empty() {
            return Err("it is empty".to_owned());
        }
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            // The runtime would read 64 hex digits as an image id, not a name.
            return Err("64 hexadecimal digits are an image id, not a name".to_owned());
        }
        let (name_and_tag, digest) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(parse_digest(digest)?)),
            None => (text, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to the host.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].find(':') {
            Some(i) => {
                let (name, tag) = name_and_tag.split_at(last_slash + i);
                (name, Some(parse_tag(&tag[1..])?))
            }
            None => (name_and_tag, None),
        };
        let (host, path) = split_host(name);
        let host = match host {
            Some(host) => normalize_host(host)?,
            None => DOCKER_HUB.to_owned(),
        };
        let mut path = parse_path(path)?;
        if host == DOCKER_HUB && path.len() == 1 {
            path.insert(0, OFFICIAL.to_owned());
        }
        let image = ImageRef { host, path, tag, digest };
        let name_bytes = image.name().len();
        if name_bytes > MAX_NAME_BYTES {
            return Err(format!("its name is {name_bytes} bytes; at most {MAX_NAME_BYTES} are allowed"));
        }
        Ok(image)
    }

    /// The repository name: host and path (`docker.io/library/busybox`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.host, self.path.join("/"))
    }
}

/// The canonical reference: host, path, tag and digest, nothing implied
/// (`busybox:1.36` is `docker.io/library/busybox:1.36`).
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// An allowed image prefix: a registry host and the first path components, or any image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImagePrefix {
    /// `*`: any valid image reference.
    Any,
    /// Images of this registry host whose path starts with these whole components.
    Under { host: String, path: Vec<String> },
}

impl ImagePrefix {
    /// Parses a prefix as an operator writes it (`registry.example.com/team/`; the
    /// trailing `/` changes nothing). The first component is the registry host when it
    /// has a `.` or `:` or is `localhost`; otherwise the prefix is on Docker Hub
    /// (`myorg` is `docker.io/myorg`; official images are `docker.io/library/`). A
    /// prefix that could not end at a component boundary is refused: one with a tag or
    /// digest, an incomplete host, an empty or invalid component, a `*` that is not the
    /// whole prefix.
    pub fn parse(text: &str) -> Result<ImagePrefix, String> {
        if text == "*" {
            return Ok(ImagePrefix::Any);
        }
        check_characters(text)?;
        if text.contains('*') {
            return Err("`*` is only allowed alone (any image); a prefix matches whole components".to_owned());
        }
        if text.contains('@') {
            return Err("a prefix cannot hold a digest".to_owned());
        }
        let text = text.strip_suffix('/').unwrap_or(text);
        if text.is_empty() {
            return Err("it is empty".to_owned());
        }
        // A ':' in the last component is a tag, unless the prefix is a host alone
        // (`registry.example.com:5000`, `[::1]`).
        let last = text.rsplit('/').next().unwrap_or_default();
        let host_alone = !text.contains('/')
            && (text.starts_with('[')
                || last.split_once(':').is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())));
        if last.contains(':') && !host_alone {
            return Err("a prefix cannot hold a tag: it names registries and repositories".to_owned());
        }
        let (host, path) = match text.split_once('/') {
            Some((first, rest)) if is_host_component(first) => (Some(first), Some(rest)),
            None if is_host_component(text) => (Some(text), None),
            _ => (None, Some(text)),
        };
        let host = match host {
            Some(host) => normalize_host(host)?,
            None => DOCKER_HUB.to_owned(),
        };
        let path = match path {
            Some(path) => parse_path(path)?,
            None => Vec::new(),
        };
        Ok(ImagePrefix::Under { host, path })
    }

    /// Whether `image` is under this prefix: the same host, and the prefix's path
    /// components are the image's first ones.
    pub fn admits(&self, image: &ImageRef) -> bool {
        match self {
            ImagePrefix::Any => true,
            ImagePrefix::Under { host, path } => *host == image.host && image.path.starts_with(path),
        }
    }
}

/// Whitespace, control and non-ASCII characters are never part of a reference; each
/// is named, so an invisible one can be found.
fn check_characters(text: &str) -> Result<(), String> {
    let Some(c) = text.chars().find(|c| !c.is_ascii_graphic()) else { return Ok(()) };
    let what = if c.is_whitespace() {
        "whitespace"
    } else if c.is_control() {
        "a control character"
    } else {
        "a non-ASCII character"
    };
    Err(format!("it contains {what} (U+{:04X}); allowed: ASCII letters, digits and . _ - / : @", u32::from(c)))
}

/// distribution/reference: the first component is a registry host when it has a `.`
/// or `:`, is `localhost`, or has an uppercase letter (a path never does).
fn is_host_component(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase())
}

/// The host part of a name and the rest, when the first component is a host.
fn split_host(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest)) if is_host_component(first) => (Some(first), rest),
        _ => (None, name),
    }
}

/// Checks `host[:port]` and returns it lowercased, Docker Hub's old name normalized.
fn normalize_host(text: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "registry host {text:?} {why}; allowed: a host name (letters, digits, '-', dot-separated), an IPv4 \
             address or a [IPv6] address, with an optional :port"
        ))
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else { return bad("has an unclosed '['") };
        if address.is_empty() || !address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return bad("has an invalid IPv6 address");
        }
        match after {
            "" => (&text[..address.len() + 2], None),
            _ => match after.strip_prefix(':') {
                Some(port) => (&text[..address.len() + 2], Some(port)),
                None => return bad("has text after its IPv6 address"),
            },
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("has an invalid port");
    }
    if !host.starts_with('[') {
        let component_ok = |c: &str| {
            let b = c.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        };
        if host.is_empty() || !host.split('.').all(component_ok) {
            return bad("is not a complete host name");
        }
    }
    let host = text.to_ascii_lowercase();
    Ok(if host == DOCKER_HUB_LEGACY { DOCKER_HUB.to_owned() } else { host })
}

/// Splits a repository path into its components, each checked.
fn parse_path(path: &str) -> Result<Vec<String>, String> {
    let mut components = Vec::new();
    for component in path.split('/') {
        if component.is_empty() {
            return Err(format!(
                "it has an empty path component (a leading, doubled or trailing '/'); each component is {PATH_RULE}"
            ));
        }
        if component.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "path component {component:?} has uppercase letters; repository paths are lowercase ({PATH_RULE})"
            ));
        }
        if !is_path_component(component) {
            return Err(format!("path component {component:?} is not allowed; allowed: {PATH_RULE}"));
        }
        components.push(component.to_owned());
    }
    Ok(components)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(component: &str) -> bool {
    let b = component.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        if !(separator == "." || separator == "_" || separator == "__" || separator.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`
fn parse_tag(tag: &str) -> Result<String, String> {
    let b = tag.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    if b.is_empty() || b.len() > 128 || !word(b[0]) || !b.iter().all(|c| word(*c) || matches!(c, b'.' | b'-')) {
        return Err(format!(
            "tag {tag:?} is not allowed; allowed: 1 to 128 letters, digits, '_', '.', '-', not starting with '.' or '-'"
        ));
    }
    Ok(tag.to_owned())
}

/// A digest the runtime can verify: `sha256`, `sha384` or `sha512` and its lowercase hex.
fn parse_digest(digest: &str) -> Result<String, String> {
    let valid = digest.split_once(':').is_some_and(|(algorithm, hex)| {
        let length = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return false,
        };
        hex.len() == length && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if !valid {
        return Err(format!(
            "digest {digest:?} is not allowed; allowed: sha256:<64 hex digits>, sha384:<96> or sha512:<128>, lowercase"
        ));
    }
    Ok(digest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(text: &str) -> ImageRef {
        ImageRef::parse(text).unwrap_or_else(|why| panic!("{text}: {why}"))
    }

    fn prefix(text: &str) -> ImagePrefix {
        ImagePrefix::parse(text).unwrap_or_else(|why| panic!("{text}: {why}"))
    }

    #[test]
    fn references_are_read_as_the_runtime_reads_them() {
        let check = |text: &str, canonical: &str| assert_eq!(image(text).to_string(), canonical, "{text}");
        check("busybox", "docker.io/library/busybox");
        check("busybox:1.36", "docker.io/library/busybox:1.36");
        check("team/app", "docker.io/team/app");
        check("docker.io/busybox", "docker.io/library/busybox");
        check("index.docker.io/team/app:1", "docker.io/team/app:1");
        check("localhost/app", "localhost/app");
        check("localhost:5000/a/b:c", "localhost:5000/a/b:c");
        check("Registry.Example.com/team/app", "registry.example.com/team/app");
        check(
            "registry.example.com/team/my_app__x.y--z:v1.2-rc_3",
            "registry.example.com/team/my_app__x.y--z:v1.2-rc_3",
        );
        check("[::1]:5000/app", "[::1]:5000/app");
        let digest = format!("sha256:{}", "a".repeat(64));
        check(&format!("registry.example.com/app@{digest}"), &format!("registry.example.com/app@{digest}"));
        check(&format!("registry.example.com/app:1@{digest}"), &format!("registry.example.com/app:1@{digest}"));
        let parsed = image("registry.example.com:443/team/app:1");
        assert_eq!((parsed.host.as_str(), parsed.path.join("/")), ("registry.example.com:443", "team/app".to_owned()));
    }

    #[test]
    fn references_that_are_not_one_say_why() {
        let check = |text: &str, needle: &str| {
            let why = ImageRef::parse(text).expect_err(text);
            assert!(why.contains(needle), "{text}: {why}");
        };
        check("", "empty");
        check("registry.example.com/team/", "empty path component");
        check("registry.example.com//app", "empty path component");
        check("registry.example.com/../app", "\"..\" is not allowed");
        check("registry.example.com/team/../../x", "\"..\" is not allowed");
        check("registry.example.com/Team/app", "uppercase");
        check("registry.example.com/a b", "whitespace (U+0020)");
        check("registry.example.com/a\tb", "whitespace (U+0009)");
        check("registry.example.com/a\u{7}b", "control character (U+0007)");
        check("registry.example.com/a\u{200b}b", "non-ASCII character (U+200B)");
        check("registrу.example.com/app", "non-ASCII character (U+0443)");
        check("registry.example.com/app:", "tag \"\"");
        check("registry.example.com/app:-x", "tag \"-x\"");
        check("registry.example.com/app:a:b", "tag \"a:b\"");
        check("registry.example.com/app@sha256:abc", "digest");
        check(&format!("registry.example.com/app@sha256:{}", "A".repeat(64)), "digest");
        check("registry.example.com:/app", "invalid port");
        check("registry.example.com:x/app", "invalid port");
        check("registry-.example.com/app", "not a complete host name");
        check("registry..example.com/app", "not a complete host name");
        check(&"a".repeat(64), "image id");
        check(&format!("registry.example.com/{}", "a".repeat(240)), "at most 255");
    }

    #[test]
    fn prefixes_match_whole_hosts_and_path_components() {
        let admits = |p: &str, i: &str| prefix(p).admits(&image(i));
        assert!(admits("registry.example.com", "registry.example.com/x"));
        assert!(admits("registry.example.com/", "registry.example.com/team/x:1"));
        assert!(!admits("registry.example.com", "registry.example.com.evil.io/x"));
        assert!(!admits("registry.example.com", "registry.example.com:5000/x"));
        assert!(!admits("registry.example.com", "evil.io/registry.example.com/x"));
        assert!(admits("registry.example.com/team", "registry.example.com/team/x"));
        assert!(admits("registry.example.com/team/", "registry.example.com/team/x"));
        assert_eq!(prefix("registry.example.com/team"), prefix("registry.example.com/team/"));
        assert!(!admits("registry.example.com/team", "registry.example.com/team-evil/x"));
        assert!(!admits("registry.example.com/team/", "registry.example.com/team-evil/x"));
        assert!(!admits("registry.example.com/team", "registry.example.com/teamx"));
        assert!(admits("registry.example.com/team/app", "registry.example.com/team/app:2"));
        assert!(admits("REGISTRY.example.com/team", "registry.EXAMPLE.com/team/app"));
        // Docker Hub: short names are official images, under docker.io/library.
        assert!(admits("docker.io/library", "busybox:1.36"));
        assert!(admits("docker.io/library/busybox", "busybox"));
        assert!(admits("index.docker.io/library/", "docker.io/library/busybox"));
        assert!(!admits("docker.io/library", "team/app"));
        assert!(admits("myorg/", "myorg/app"), "a prefix without a host is on Docker Hub");
        assert!(admits("myorg", "docker.io/myorg/app"));
        assert!(!admits("busybox", "busybox"), "docker.io/busybox is a namespace, not the official image");
        assert!(admits("*", "anything.example/x"));
    }

    #[test]
    fn prefixes_that_cannot_end_at_a_boundary_are_refused() {
        let check = |text: &str, needle: &str| {
            let why = ImagePrefix::parse(text).expect_err(text);
            assert!(why.contains(needle), "{text}: {why}");
        };
        check("registry.example.com/team/app:1.0", "cannot hold a tag");
        check("busybox:latest", "cannot hold a tag");
        check("registry.example.com/app@sha256:abc", "digest");
        check("registry.example.", "not a complete host name");
        check(".example.com/x", "not a complete host name");
        check("registry.example.com:", "invalid port");
        check("registry.example.com/*", "`*` is only allowed alone");
        check("*.example.com", "`*` is only allowed alone");
        check("registry.example.com//team", "empty path component");
        check("registry.example.com/Team", "uppercase");
        check("registry.example.com/te..am", "not allowed");
        check("/", "empty");
        check("registry.example.com/a b", "whitespace");
    }
}
