"""HTTP push to desk phones (Poly, Cisco): a sender beside the SIP one, behind the same protocol."""
