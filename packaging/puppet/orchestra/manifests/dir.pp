# @summary Private: a directory with its owner and mode, created with its parents.
#
# The parents (/usr/lib/orchestra for the default scores_dir, say) are made with
# "mkdir -p" rather than managed: another module may manage them, and their owner and
# mode are not this module's business.
#
# @param owner  the directory's owner.
# @param group  its group.
# @param mode   its mode.
define orchestra::dir (
  String[1] $owner = 'root',
  String[1] $group = 'root',
  String[4, 4] $mode = '0755',
) {
  assert_type(Orchestra::Path, $title)
  exec { "orchestra mkdir ${title}":
    command => ['mkdir', '-p', '--', $title],
    creates => $title,
    path    => ['/usr/bin', '/bin'],
  }
  -> file { $title:
    ensure => directory,
    owner  => $owner,
    group  => $group,
    mode   => $mode,
  }
}
