# @summary The player: player.toml, scores_dir, the unit and the service.
#
# The player reads player.toml only at start, so a change to it (or to the unit or its
# drop-in) restarts the player: safe, because the unit's KillMode=process leaves running
# scores alone and the next player process reports them. Scores installed with
# orchestra::score only reload it (SIGHUP re-scans scores_dir); the player would also
# notice them by itself within seconds.
#
# Settings left undef are not written: the player's own defaults apply
# (examples/player.toml, with the bounds the player enforces).
#
# @param conductor           HOST:PORT of the conductor.
# @param conductor_name      the name the conductor's certificate carries, when it is not
#                            the host part of conductor (dialling an IP address, say).
# @param spool_dir           spool.db and each task's output.
# @param max_concurrent      tasks at once (see examples/player.toml for these).
# @param default_timeout     seconds, for scores whose .conf sets none.
# @param kill_grace          seconds between SIGTERM and SIGKILL of a score.
# @param output_tail_bytes   bytes.
# @param max_output_bytes    bytes.
# @param response_max_bytes  bytes.
# @param heartbeat_seconds   seconds.
# @param liveness_timeout    seconds.
# @param backoff_initial     seconds.
# @param backoff_max         seconds.
# @param ca                  default: orchestra::ca.
# @param cert                default: orchestra::cert (its CN is the player's name).
# @param key                 default: orchestra::key.
# @param user                User= in the drop-in (scores run as this user).
# @param group               Group= in the drop-in.
# @param manage_service      false: leave the service and its reloads to someone else.
# @param service_options     attributes for the service resource, merged over
#                            { ensure => running, enable => true }.
# @param reload_command      what sends the running player SIGHUP; does nothing when it
#                            is not running.
class orchestra::player (
  Pattern[/\A.+:[0-9]{1,5}\z/] $conductor,
  Optional[String[1]] $conductor_name = undef,
  Orchestra::Path $spool_dir = '/var/lib/orchestra/player',
  Optional[Integer[1, 1024]] $max_concurrent = undef,
  Optional[Numeric] $default_timeout = undef,
  Optional[Numeric] $kill_grace = undef,
  Optional[Integer[0, 1048576]] $output_tail_bytes = undef,
  Optional[Integer[1024, 1073741824]] $max_output_bytes = undef,
  Optional[Integer[0, 1048576]] $response_max_bytes = undef,
  Optional[Numeric] $heartbeat_seconds = undef,
  Optional[Numeric] $liveness_timeout = undef,
  Optional[Numeric] $backoff_initial = undef,
  Optional[Numeric] $backoff_max = undef,
  Optional[Orchestra::Path] $ca = undef,
  Optional[Orchestra::Path] $cert = undef,
  Optional[Orchestra::Path] $key = undef,
  Optional[String[1]] $user = undef,
  Optional[String[1]] $group = undef,
  Boolean $manage_service = true,
  Hash[String[1], Any] $service_options = {},
  Variant[String[1], Array[String[1]]] $reload_command = ['systemctl', 'try-reload-or-restart', 'orchestra-player'],
) {
  include orchestra
  $config = "${orchestra::config_dir}/player.toml"

  $settings = {
    conductor          => $conductor,
    conductor_name     => $conductor_name,
    scores_dir         => $orchestra::scores_dir,
    spool_dir          => $spool_dir,
    max_concurrent     => $max_concurrent,
    default_timeout    => $default_timeout,
    kill_grace         => $kill_grace,
    output_tail_bytes  => $output_tail_bytes,
    max_output_bytes   => $max_output_bytes,
    response_max_bytes => $response_max_bytes,
    heartbeat_seconds  => $heartbeat_seconds,
    liveness_timeout   => $liveness_timeout,
    backoff_initial    => $backoff_initial,
    backoff_max        => $backoff_max,
  }.filter |$key, $value| { $value =~ NotUndef }
  $tls = {
    ca   => $ca.lest || { $orchestra::ca },
    cert => $cert.lest || { $orchestra::cert },
    key  => $key.lest || { $orchestra::key },
  }

  file { $config:
    ensure  => file,
    content => epp('orchestra/player.toml.epp', { settings => $settings, tls => $tls }),
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
  }
  # Root's and 0755: the player refuses scores in a directory anyone else may write to.
  orchestra::dir { $orchestra::scores_dir:
    owner => 'root',
    group => 'root',
    mode  => '0755',
  }

  orchestra::unit { 'orchestra-player':
    exec_start => "${orchestra::bin_dir}/player --config ${config}",
    user       => $user,
    group      => $group,
  }

  if $manage_service {
    service { 'orchestra-player':
      *         => { ensure => running, enable => true } + $service_options,
      subscribe => [File[$config], Orchestra::Unit['orchestra-player']],
      require   => Orchestra::Dir[$orchestra::scores_dir],
    }
    exec { 'reload orchestra-player':
      command     => $reload_command,
      path        => ['/usr/bin', '/bin'],
      refreshonly => true,
      require     => Service['orchestra-player'],
    }
    Orchestra::Score <| |> ~> Exec['reload orchestra-player']
  }
}
