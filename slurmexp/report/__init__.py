"""Reading the ledger back: status, report tables and formats, show and logs."""
