"""Each maker's desk phone screen: chat text -> that maker's XML (pure), a module each."""
