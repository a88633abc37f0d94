# An absolute path that systemd's unit syntax reads as written: no whitespace, no "%"
# (a specifier), no "$" (a variable), no quotes or backslashes. The module writes some
# of these paths into units and drop-ins (ExecStart=, ReadWritePaths=).
type Orchestra::Path = Pattern[/\A\/[^\s%$"'\\]*\z/]
