# @summary The conductor: conductor.toml, the players file, audience.toml, the unit and
#   the service.
#
# A change to the players file reloads the conductor (SIGHUP: players added may connect
# at once, sessions of players removed are closed); a change to conductor.toml, the unit
# or its drop-in restarts it (players reconnect by themselves and the queue is on disk).
#
# Settings left undef are not written: the conductor's own defaults apply
# (examples/conductor.toml). The conductor refuses unknown keys, so there is no way to
# pass one through.
#
# @param players            certnames allowed to connect as players (the players file).
# @param listen             HOST:PORT of the players' mTLS endpoint.
# @param audience_socket    the local audience socket.
# @param state_dir          queue.db, conductor.lock and, by default, audit.log.
# @param players_file       default: CONFIG_DIR/players.
# @param audit_log          default: STATE_DIR/audit.log.
# @param job_deadline       seconds (see examples/conductor.toml for these six).
# @param job_retention      seconds.
# @param heartbeat_seconds  seconds.
# @param liveness_timeout   seconds.
# @param reconnect_grace    seconds.
# @param handshake_timeout  seconds.
# @param max_connections    0 = the open-files limit minus 512.
# @param groups             [groups]: name => members (names and globs).
# @param policy             [[policy]] rules, in order, each a hash of the rule's keys.
# @param audience           [audience."CERTNAME"]: certname => { scores, targets }.
# @param ca                 default: orchestra::ca.
# @param cert               default: orchestra::cert (must carry the name players dial).
# @param key                default: orchestra::key.
# @param crl                default: orchestra::crl; '' for none.
# @param user               User= in the drop-in (must be able to read the key).
# @param group              Group= in the drop-in: the audience socket's group.
# @param manage_service     false: leave the service and its reloads to someone else.
# @param service_options    attributes for the service resource, merged over
#                           { ensure => running, enable => true }.
# @param reload_command     what sends the running conductor SIGHUP; does nothing when
#                           it is not running (it is started with the new file then).
class orchestra::conductor (
  Array[Orchestra::Certname] $players = [],
  Pattern[/\A.+:[0-9]{1,5}\z/] $listen = '0.0.0.0:2258',
  Orchestra::Path $audience_socket = '/run/orchestra/conductor.sock',
  Orchestra::Path $state_dir = '/var/lib/orchestra/conductor',
  Optional[Orchestra::Path] $players_file = undef,
  Optional[Orchestra::Path] $audit_log = undef,
  Optional[Numeric] $job_deadline = undef,
  Optional[Numeric] $job_retention = undef,
  Optional[Numeric] $heartbeat_seconds = undef,
  Optional[Numeric] $liveness_timeout = undef,
  Optional[Numeric] $reconnect_grace = undef,
  Optional[Numeric] $handshake_timeout = undef,
  Optional[Integer[0]] $max_connections = undef,
  Hash[String[1], Array[String[1]]] $groups = {},
  Array[Hash[String[1], Any]] $policy = [],
  Hash[String[1], Hash[String[1], Any]] $audience = {},
  Optional[Orchestra::Path] $ca = undef,
  Optional[Orchestra::Path] $cert = undef,
  Optional[Orchestra::Path] $key = undef,
  Optional[Variant[Orchestra::Path, Enum['']]] $crl = undef,
  Optional[String[1]] $user = undef,
  Optional[String[1]] $group = undef,
  Boolean $manage_service = true,
  Hash[String[1], Any] $service_options = {},
  Variant[String[1], Array[String[1]]] $reload_command = ['systemctl', 'try-reload-or-restart', 'orchestra-conductor'],
) {
  include orchestra
  $config = "${orchestra::config_dir}/conductor.toml"
  $players_path = $players_file.lest || { "${orchestra::config_dir}/players" }

  $settings = {
    listen            => $listen,
    audience_socket   => $audience_socket,
    state_dir         => $state_dir,
    players_file      => $players_path,
    audit_log         => $audit_log,
    job_deadline      => $job_deadline,
    job_retention     => $job_retention,
    heartbeat_seconds => $heartbeat_seconds,
    liveness_timeout  => $liveness_timeout,
    reconnect_grace   => $reconnect_grace,
    handshake_timeout => $handshake_timeout,
    max_connections   => $max_connections,
  }.filter |$key, $value| { $value =~ NotUndef }
  $tls = {
    ca   => $ca.lest || { $orchestra::ca },
    cert => $cert.lest || { $orchestra::cert },
    key  => $key.lest || { $orchestra::key },
    crl  => $crl.lest || { $orchestra::crl },
  }.filter |$key, $value| { $value != '' }

  file { $config:
    ensure  => file,
    content => epp('orchestra/conductor.toml.epp', {
      settings => $settings,
      tls      => $tls,
      groups   => $groups,
      policy   => $policy,
      audience => $audience,
    }),
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
  }
  file { $players_path:
    ensure  => file,
    content => epp('orchestra/players.epp', { players => $players.unique.sort }),
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
  }
  file { "${orchestra::config_dir}/audience.toml":
    ensure  => file,
    content => epp('orchestra/audience.toml.epp', { socket => $audience_socket }),
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
  }

  # The unit makes everything read-only except its StateDirectory= and
  # RuntimeDirectory= (the defaults of state_dir and of the socket's directory): any
  # other directory the conductor writes to is created here and made writable.
  $socket_dir = $audience_socket.regsubst(/\/[^\/]+\z/, '')
  $audit_dir = $audit_log.then |$path| { $path.regsubst(/\/[^\/]+\z/, '') }
  $writable = ([$state_dir, $socket_dir, $audit_dir].filter |$dir| { $dir =~ NotUndef }).unique
    - ['/var/lib/orchestra/conductor', '/run/orchestra']
  $owner = $user.lest || { 'root' }
  $writable.each |$dir| {
    orchestra::dir { $dir:
      owner => $owner,
      group => $group.lest || { 'root' },
      # The socket's directory lets the group reach the 0660 socket; the rest is private.
      mode  => $dir ? { $socket_dir => '0750', default => '0700' },
    }
  }

  orchestra::unit { 'orchestra-conductor':
    exec_start       => "${orchestra::bin_dir}/conductor --config ${config}",
    user             => $user,
    group            => $group,
    read_write_paths => $writable,
  }

  if $manage_service {
    service { 'orchestra-conductor':
      *         => { ensure => running, enable => true } + $service_options,
      subscribe => [File[$config], Orchestra::Unit['orchestra-conductor']],
      require   => [File[$players_path]] + $writable.map |$dir| { Orchestra::Dir[$dir] },
    }
    exec { 'reload orchestra-conductor':
      command     => $reload_command,
      path        => ['/usr/bin', '/bin'],
      refreshonly => true,
      subscribe   => File[$players_path],
      require     => Service['orchestra-conductor'],
    }
  }
}
