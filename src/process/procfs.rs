//! The one `/proc` reader: every process's `/proc/PID/stat` (state, parent, process group), for
//! the process-group wait and the PID-1 orphan sweep. Linux only; elsewhere there is nothing.

/// What the group wait and the orphan sweep need of one `/proc/PID/stat` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// The one-letter state: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    pub parent: i32,
    pub group: i32,
}

impl Stat {
    /// Not yet exited: zombies (waiting for a parent, or for an init that does not reap) and dead
    /// entries do not count.
    pub fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the text of `/proc/PID/stat`. The command name in parentheses may contain spaces and
/// parentheses itself, so the fields are read after its last `)`.
pub fn parse_stat(stat: &str) -> Option<Stat> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    Some(Stat {
        state,
        parent,
        group,
    })
}

/// Every process this `/proc` shows (that of this process's PID namespace, which is what a
/// container has), as (pid, stat). Processes that end during the scan are left out; nothing at
/// all when `/proc` cannot be read.
#[cfg(target_os = "linux")]
pub fn processes() -> impl Iterator<Item = (i32, Stat)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let name = name.to_str()?;
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            name.parse::<i32>().ok()
        })
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parse_stat(&stat)?))
        })
}

#[cfg(not(target_os = "linux"))]
pub fn processes() -> impl Iterator<Item = (i32, Stat)> {
    std::iter::empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_state_parent_and_group_whatever_the_name() {
        let stat = |state, parent, group| {
            Some(Stat {
                state,
                parent,
                group,
            })
        };
        assert_eq!(
            parse_stat("123 (a (weird) name) S 1 4567 4567 0 -1"),
            stat('S', 1, 4567)
        );
        assert_eq!(parse_stat("42 (sleep) Z 1 42 42 0 -1"), stat('Z', 1, 42));
        assert_eq!(parse_stat("7 (my (odd) name) S 3 7 7 0"), stat('S', 3, 7));
        assert_eq!(parse_stat("123 (x) Z 1 99 99"), stat('Z', 1, 99));
        assert_eq!(parse_stat("garbage"), None);
        assert!(!parse_stat("1 (x) Z 0 1 1").unwrap().is_live());
        assert!(!parse_stat("1 (x) X 0 1 1").unwrap().is_live());
        assert!(parse_stat("1 (x) D 0 1 1").unwrap().is_live());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_listed() {
        let me = std::process::id() as i32;
        let (_, stat) = processes()
            .find(|(pid, _)| *pid == me)
            .expect("this process is in /proc");
        assert!(stat.is_live());
        assert_eq!(stat.parent, nix::unistd::getppid().as_raw());
        assert_eq!(stat.group, nix::unistd::getpgrp().as_raw());
    }
}
