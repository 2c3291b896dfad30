"""The POP3 server core, sans-IO (RFC 1939 with CAPA 2449, STLS 2595, SASL 5034, codes 3206)."""
