# @summary A score: the executable NAME and NAME.conf in the player's scores_dir.
#
# Both are root's, the executable 0755 and the .conf 0644: the player refuses a score
# that anyone but root (or its own user) could change. The .conf is written after the
# executable, as a score without its .conf is not listed at all. With orchestra::player
# managing its service, a change here reloads the player (SIGHUP), which announces the
# new list to the conductor at once.
#
# @example
#   orchestra::score { 'deploy':
#     source  => 'puppet:///modules/site/scores/deploy',
#     timeout => 600,
#     params  => ['VERSION required pattern=^[0-9.]+$'],
#   }
#
# @param ensure     'absent' removes both files.
# @param source     where the executable comes from (any file source Puppet takes).
# @param content    or the executable itself; exactly one of source and content.
# @param conf       the whole .conf; default: built from the four parameters below.
# @param interface  env or pipe.
# @param timeout    seconds; default: the player's default_timeout.
# @param dir        working directory; default /.
# @param params     one "param" line each, without the word param.
define orchestra::score (
  Enum['present', 'absent'] $ensure = 'present',
  Optional[String[1]] $source = undef,
  Optional[String[1]] $content = undef,
  Optional[String] $conf = undef,
  Enum['env', 'pipe'] $interface = 'env',
  Optional[Numeric] $timeout = undef,
  Optional[Orchestra::Path] $dir = undef,
  Array[Pattern[/\A[^\r\n]+\z/]] $params = [],
) {
  assert_type(Pattern[/\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\z/], $title) |$expected, $actual| {
    fail("orchestra::score: '${title}' is not a valid score name")
  }
  if $ensure == 'present' and ($source =~ Undef) == ($content =~ Undef) {
    fail("orchestra::score[${title}]: give exactly one of source and content")
  }
  include orchestra
  $path = "${orchestra::scores_dir}/${title}"

  $file_ensure = $ensure ? { 'present' => 'file', default => 'absent' }
  file { $path:
    ensure  => $file_ensure,
    source  => $source,
    content => $content,
    owner   => 'root',
    group   => 'root',
    mode    => '0755',
  }
  -> file { "${path}.conf":
    ensure  => $file_ensure,
    content => $conf.lest || {
      epp('orchestra/score.conf.epp', {
        interface => $interface,
        timeout   => $timeout,
        dir       => $dir,
        params    => $params,
      })
    },
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
  }
}
