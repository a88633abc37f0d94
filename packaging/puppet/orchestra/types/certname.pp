# A certname as the conductor reads it from the players file (orchestra/params.py,
# CERTNAME_RE): a bad one would make the conductor refuse the whole file on reload.
type Orchestra::Certname = Pattern[/\A[A-Za-z0-9][A-Za-z0-9._-]{0,252}\z/]
