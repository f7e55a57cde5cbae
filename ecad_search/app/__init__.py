"""The service layer between the command line and the library: typed requests (`requests`), their checks and
the derived run (`prepare`, `compare`), and the observers that show and write what a search does (`progress`,
`outputs`). Errors name request fields; only the command line knows flags, and only observers print."""
