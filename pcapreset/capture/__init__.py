"""capture: packets in. Capture files (pcap, pcapng, compressed), a live socket,
and the decoder that turns their frames into columns of TCP segments."""
