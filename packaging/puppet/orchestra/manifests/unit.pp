# @summary Private: a daemon's unit from this module and the drop-in that adapts it.
#
# The unit is the file shipped in files/ (packaging/systemd links to it), never edited
# here; what differs per host goes into <unit>.service.d/puppet.conf. Services that
# subscribe to this resource restart when either changes, and Puppet's systemd provider
# (Puppet 6.1 and later) runs "systemctl daemon-reload" before that start or restart
# whenever systemd reports the unit changed on disk (NeedDaemonReload=yes).
#
# @param exec_start        the command line.
# @param user              User= (none: root).
# @param group             Group= (none: the user's).
# @param read_write_paths  paths to add to the unit's ReadWritePaths=.
define orchestra::unit (
  String[1] $exec_start,
  Optional[String[1]] $user = undef,
  Optional[String[1]] $group = undef,
  Array[Orchestra::Path] $read_write_paths = [],
) {
  include orchestra
  $unit = "${orchestra::unit_dir}/${title}.service"
  file { $unit:
    ensure => file,
    source => "puppet:///modules/orchestra/${title}.service",
    owner  => 'root',
    group  => 'root',
    mode   => '0644',
  }
  file { "${unit}.d":
    ensure => directory,
    owner  => 'root',
    group  => 'root',
    mode   => '0755',
  }
  file { "${unit}.d/puppet.conf":
    ensure  => file,
    content => epp('orchestra/dropin.conf.epp', {
      exec_start       => $exec_start,
      user             => $user,
      group            => $group,
      read_write_paths => $read_write_paths,
    }),
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
  }
}
