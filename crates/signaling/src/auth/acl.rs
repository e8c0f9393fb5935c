//! Path patterns of a token's `acl.paths` claim, in the Nexmo format: `*` matches one path
//! segment and `**` any number of segments, zero included.
//!
//! The matcher works on any absolute path, so the REST routes (`/v0.1/conversations/CON-1`)
//! and other entry points such as a socket path share it.

use std::fmt;
use std::str::FromStr;

/// One compiled `acl.paths` pattern, such as `/*/conversations/**`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// Matches the same text, byte for byte.
    Literal(String),
    /// `*`: exactly one non-empty segment.
    One,
    /// `**`: zero or more segments.
    Any,
}

/// An `acl.paths` pattern that cannot be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid acl path pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

impl FromStr for PathPattern {
    type Err = PatternError;

    fn from_str(pattern: &str) -> Result<Self, Self::Err> {
        let error = |reason| PatternError {
            pattern: pattern.to_owned(),
            reason,
        };
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err(error("a pattern starts with `/`"));
        };

        let mut segments = Vec::new();
        for segment in rest.split('/') {
            let compiled = match segment {
                "" => return Err(error("a pattern has no empty segments")),
                "." | ".." => return Err(error("a pattern has no `.` or `..` segments")),
                "*" => Segment::One,
                "**" => Segment::Any,
                literal if literal.contains('*') => {
                    return Err(error("`*` and `**` must be whole segments"));
                }
                literal => Segment::Literal(literal.to_owned()),
            };
            segments.push(compiled);
        }
        Ok(PathPattern {
            text: pattern.to_owned(),
            segments,
        })
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PathPattern {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Checks whether `path` matches the whole pattern. The path is compared as sent, without
    /// percent-decoding, like the router's own matching. A path that is not absolute, or that
    /// has a `.` or `..` segment, matches no pattern.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let path_segments: Vec<&str> = rest.split('/').collect();
        if path_segments
            .iter()
            .any(|segment| *segment == "." || *segment == "..")
        {
            return false;
        }
        match_segments(&self.segments, &path_segments)
    }
}

/// Wildcard matching over segments, with `**` as the star: on a mismatch it backtracks to the
/// last `**` and lets it take one more segment. That costs at most patterns × segments steps.
fn match_segments(pattern: &[Segment], path: &[&str]) -> bool {
    let mut next_pattern = 0;
    let mut next_path = 0;
    // Position of the last `**`, and the first path segment it has not taken yet.
    let mut backtrack: Option<(usize, usize)> = None;

    while next_path < path.len() {
        match pattern.get(next_pattern) {
            Some(Segment::Any) => {
                backtrack = Some((next_pattern, next_path));
                next_pattern += 1;
                continue;
            }
            Some(segment) if segment_matches(segment, path[next_path]) => {
                next_pattern += 1;
                next_path += 1;
                continue;
            }
            _ => {}
        }

        let Some((any_at, taken_up_to)) = backtrack else {
            return false;
        };
        next_pattern = any_at + 1;
        next_path = taken_up_to + 1;
        backtrack = Some((any_at, next_path));
    }

    pattern[next_pattern..]
        .iter()
        .all(|segment| *segment == Segment::Any)
}

fn segment_matches(segment: &Segment, text: &str) -> bool {
    match segment {
        Segment::Literal(literal) => literal == text,
        Segment::One => !text.is_empty(),
        Segment::Any => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> PathPattern {
        text.parse().expect("a valid pattern")
    }

    #[test]
    fn star_matches_one_segment() {
        let users = pattern("/*/users");
        assert!(users.matches("/v0.1/users"));
        assert!(!users.matches("/users"));
        assert!(!users.matches("/v0.1/beta/users"));
        assert!(!users.matches("//users"));
        assert!(!users.matches("/v0.1/users/USR-1"));
    }

    #[test]
    fn double_star_matches_any_segments() {
        let conversations = pattern("/*/conversations/**");
        assert!(conversations.matches("/v0.1/conversations"));
        assert!(conversations.matches("/v0.1/conversations/"));
        assert!(conversations.matches("/v0.1/conversations/CON-1"));
        assert!(conversations.matches("/v0.1/conversations/CON-1/members/MEM-1"));
        assert!(!conversations.matches("/v0.1/users/USR-1"));
        assert!(!conversations.matches("/v0.1/conversationsX"));
        assert!(!conversations.matches("/conversations/CON-1"));
    }

    #[test]
    fn double_star_in_middle_backtracks() {
        let members = pattern("/**/members/*");
        assert!(members.matches("/v0.1/conversations/CON-1/members/MEM-1"));
        assert!(members.matches("/members/MEM-1"));
        assert!(members.matches("/members/members/members/MEM-1"));
        assert!(!members.matches("/v0.1/conversations/CON-1/members"));
        assert!(!members.matches("/v0.1/members/MEM-1/events"));

        let events = pattern("/*/conversations/**/events");
        assert!(events.matches("/v0.1/conversations/events"));
        assert!(events.matches("/v0.1/conversations/CON-1/events"));
        assert!(!events.matches("/v0.1/conversations/CON-1/events/1"));
    }

    #[test]
    fn literal_segments_match_exactly() {
        let one = pattern("/v0.1/conversations/CON-1/**");
        assert!(one.matches("/v0.1/conversations/CON-1/events"));
        assert!(!one.matches("/v0.1/conversations/CON-2/events"));
        assert!(!one.matches("/v0.1/conversations/con-1/events"));
        assert!(!one.matches("/v0.2/conversations/CON-1"));
    }

    #[test]
    fn socket_paths_match() {
        assert!(pattern("/rtc").matches("/rtc"));
        assert!(pattern("/*/sessions/**").matches("/v0.1/sessions/rtc"));
        assert!(!pattern("/*/sessions/**").matches("/rtc"));
        assert!(pattern("/**").matches("/rtc"));
    }

    #[test]
    fn dot_segments_never_match() {
        let users = pattern("/*/users/**");
        assert!(!users.matches("/v0.1/users/../conversations/CON-1"));
        assert!(!users.matches("/v0.1/users/./USR-1"));
        assert!(!pattern("/**").matches("/v0.1/.."));
    }

    #[test]
    fn relative_path_never_matches() {
        assert!(!pattern("/**").matches("v0.1/users"));
        assert!(!pattern("/**").matches(""));
    }

    #[test]
    fn invalid_patterns_are_rejected() {
        for (text, reason) in [
            ("", "a pattern starts with `/`"),
            ("*/users", "a pattern starts with `/`"),
            ("/", "a pattern has no empty segments"),
            ("/v0.1//users", "a pattern has no empty segments"),
            ("/v0.1/users/", "a pattern has no empty segments"),
            ("/v0.1/../users", "a pattern has no `.` or `..` segments"),
            ("/v0.1/user*", "`*` and `**` must be whole segments"),
            ("/***", "`*` and `**` must be whole segments"),
        ] {
            let error = text.parse::<PathPattern>().expect_err(text);
            assert_eq!(error.reason, reason, "{text:?}");
            assert_eq!(error.pattern, text);
        }
    }

    #[test]
    fn pattern_displays_as_written() {
        assert_eq!(
            pattern("/*/legs/**").to_string(),
            "/*/legs/**",
            "Display is the source text"
        );
    }

    #[test]
    fn many_double_stars_on_long_path() {
        let many = pattern(&"/**/a".repeat(20));
        assert!(!many.matches(&"/b".repeat(2_000)));
        assert!(many.matches(&"/a".repeat(20)));
        assert!(many.matches(&format!("{}/b/a", "/a".repeat(19))));
        assert!(!many.matches(&"/a".repeat(19)));
    }
}
