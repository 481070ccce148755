//go:build integration

package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, PEM, in dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gridbatch monitor test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	return certFile, keyFile
}

func TestMonitorBinaryGuards(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	const user, password = "ops", "monitor-test-password"
	creds := []string{"GRIDBATCH_MONITOR_USER=" + user, "GRIDBATCH_MONITOR_PASSWORD=" + password}
	started := regexp.MustCompile(`msg="monitor started" addr=(\S+)`)

	t.Run("TLS, and asynqmon's pages cannot be framed", func(t *testing.T) {
		cert, key := selfSigned(t, t.TempDir())
		mon := c.Start("monitor", append(creds, "GRIDBATCH_MONITOR_ADDR=127.0.0.1:0"), "--tls-cert", cert, "--tls-key", key)
		base := "https://" + logValue(t, mon, started, 30*time.Second)
		pool := x509.NewCertPool()
		pem, err := os.ReadFile(cert)
		require.NoError(t, err)
		require.True(t, pool.AppendCertsFromPEM(pem))
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		for _, page := range []string{"/asynqmon/", "/asynqmon/api/queues", "/"} {
			req, err := http.NewRequest(http.MethodGet, base+page, nil)
			require.NoError(t, err)
			req.SetBasicAuth(user, password)
			resp, err := client.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode, page)
			require.NotNil(t, resp.TLS, "served over TLS")
			require.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"), page)
			require.Contains(t, resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'", page)
		}
		require.NotContains(t, mon.LogText(), "clear text")
	})

	t.Run("basic auth in clear on every interface is warned about", func(t *testing.T) {
		mon := c.Start("monitor", append(creds, "GRIDBATCH_MONITOR_ADDR=0.0.0.0:0"))
		logValue(t, mon, started, 30*time.Second)
		require.Eventually(t, func() bool {
			return strings.Contains(mon.LogText(), "serving basic auth in clear text on a non-loopback address")
		},
			10*time.Second, 50*time.Millisecond, mon.LogText())
	})

	t.Run("a short password is refused", func(t *testing.T) {
		_, errOut, code := runBin(t, append(c.Env(), "GRIDBATCH_MONITOR_USER=ops", "GRIDBATCH_MONITOR_PASSWORD=short"), "monitor")
		require.Equal(t, 1, code)
		require.Contains(t, errOut, "GRIDBATCH_MONITOR_PASSWORD has 5 characters; use 12 or more")
		require.NotContains(t, errOut, "short\n")
	})
}
