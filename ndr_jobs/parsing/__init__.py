"""Reading raw logs: PAN-OS TRAFFIC parsing (the reference parser and its compiled scanner) and raw-line splits."""
