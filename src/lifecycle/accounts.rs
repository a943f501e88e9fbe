//! The tunnel user's uid and group's gid, read from `/etc/passwd` and `/etc/group` (no NSS:
//! users from LDAP or systemd's dynamic users are not seen, and are not meant for tunnels).

use std::io;

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

/// The uid of `user`. A name that is all digits and not found is taken as a uid.
pub fn uid(user: &str) -> io::Result<Option<u32>> {
    Ok(id_in(&std::fs::read_to_string(PASSWD)?, user))
}

/// The gid of `group`. A name that is all digits and not found is taken as a gid.
pub fn gid(group: &str) -> io::Result<Option<u32>> {
    Ok(id_in(&std::fs::read_to_string(GROUP)?, group))
}

/// The third field of the line whose first field is `name`, in the colon-separated format
/// shared by passwd and group files.
fn id_in(text: &str, name: &str) -> Option<u32> {
    let found = text
        .lines()
        .map(|line| line.split(':'))
        .find_map(|mut fields| {
            (fields.next()? == name)
                .then(|| fields.nth(1)?.parse().ok())
                .flatten()
        });
    found.or_else(|| {
        let numeric = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
        numeric.then(|| name.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/bash\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        raptor-tunnel:x:998:997::/nonexistent:/usr/sbin/nologin\n\
        broken:x:notanumber:1::/:/bin/false\n";

    #[test]
    fn finds_ids_by_name() {
        assert_eq!(id_in(PASSWD_TEXT, "root"), Some(0));
        assert_eq!(id_in(PASSWD_TEXT, "nobody"), Some(65534));
        assert_eq!(id_in(PASSWD_TEXT, "raptor-tunnel"), Some(998));
        assert_eq!(id_in("nogroup:x:65534:\n", "nogroup"), Some(65534));
    }

    #[test]
    fn unknown_names_and_bad_lines_are_none() {
        assert_eq!(id_in(PASSWD_TEXT, "raptor"), None);
        assert_eq!(id_in(PASSWD_TEXT, "broken"), None);
        assert_eq!(id_in(PASSWD_TEXT, ""), None);
        assert_eq!(id_in("", "root"), None);
    }

    #[test]
    fn numeric_names_are_ids() {
        assert_eq!(id_in(PASSWD_TEXT, "1234"), Some(1234));
        assert_eq!(id_in(PASSWD_TEXT, "99999999999"), None);
    }

    #[test]
    fn the_hosts_files_know_root() {
        assert_eq!(uid("root").unwrap(), Some(0));
        assert_eq!(gid("root").unwrap(), Some(0));
    }
}
