"""Matrix: `!deskphone ...` in a room -> relay; the report -> a notice in the thread
(``adapter``)."""
