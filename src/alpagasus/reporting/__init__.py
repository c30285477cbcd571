"""What people look at: the figures, the HTML report, the README's miniature table."""
