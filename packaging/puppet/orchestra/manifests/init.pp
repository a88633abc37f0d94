# @summary Settings shared by the conductor, the player and the scores on one host.
#
# Declare it (or set its parameters in Hiera) only to change a path; orchestra::conductor,
# orchestra::player and orchestra::score include it. Every path is a parameter, with
# the production default.
#
# The TLS files default to the Puppet agent's own: the host's certificate and key, the
# CA bundle and the CRL under $settings::ssldir, named after $trusted['certname']. The
# key is readable by root only (or by the puppet user), which is why the units run both
# daemons as root; see the module's README to run them as another user.
#
# @param config_dir     conductor.toml, player.toml, audience.toml and the players file.
# @param unit_dir       where the units and their drop-ins go.
# @param bin_dir        where the conductor and player console scripts are installed.
# @param scores_dir     the player's scores_dir, where orchestra::score installs scores.
# @param certname       this host's identity (the certificate's CN).
# @param ssldir         Puppet's ssl directory.
# @param ca             CA bundle.
# @param cert           this host's certificate.
# @param key            its private key.
# @param crl            the CRL the conductor checks.
class orchestra (
  Orchestra::Path $config_dir = '/etc/orchestra',
  Orchestra::Path $unit_dir = '/etc/systemd/system',
  Orchestra::Path $bin_dir = '/usr/local/bin',
  Orchestra::Path $scores_dir = '/usr/lib/orchestra/scores',
  Orchestra::Certname $certname = $trusted['certname'],
  Orchestra::Path $ssldir = $settings::ssldir,
  Orchestra::Path $ca = "${ssldir}/certs/ca.pem",
  Orchestra::Path $cert = "${ssldir}/certs/${certname}.pem",
  Orchestra::Path $key = "${ssldir}/private_keys/${certname}.pem",
  Orchestra::Path $crl = "${ssldir}/crl.pem",
) {
  file { $config_dir:
    ensure => directory,
    owner  => 'root',
    group  => 'root',
    mode   => '0755',
  }
}
