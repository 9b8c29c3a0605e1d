"""Named experiments (rtvm reproduce NAME) and the runner they share."""
