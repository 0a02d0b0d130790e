"""What a schedule costs: cost tables counted or calibrated, whole loops timed, `repro bench`."""
