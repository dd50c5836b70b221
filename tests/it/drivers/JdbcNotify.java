// LISTEN/NOTIFY through sluice with pgjdbc, run by tests/it/drivers/notify.rs with the single-file
// source launcher:
//   java -cp /usr/share/java/postgresql.jar JdbcNotify.java HOST PORT USER PASSWORD DB DIRECT_PORT [CONNS [NOTIFICATIONS]]
// CONNS connections LISTEN on jdbc_jobs the ways pgjdbc sends it, always by the extended protocol
// (Statement.execute with autocommit, inside a JDBC transaction committed by commit(), and a
// PreparedStatement), then each runs queries from its own thread and polls
// PGConnection.getNotifications(timeout) in between, which blocks on the socket: what arrives
// there, sluice pushed unasked. NOTIFICATIONS go out in sequence through sluice (pg_notify() alone
// or in a transaction) and from a connection straight to PostgreSQL on DIRECT_PORT
// (ApplicationName notify-direct, left out of the test's count of server connections). Each
// connection must get each once, in commit order, with the sending backend's pid, as it does
// against PostgreSQL itself (both ports pointing at it). Prints one `RESULT {json}` line; exits 1
// with every mismatch on stderr.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicLong;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;

public class JdbcNotify {
    static final String CHANNEL = "jdbc_jobs";
    static final long WAIT_MS = 30_000; // a slow machine, a debug build, a small pool
    static String host, user, password, db;
    static final List<String> FAILURES = Collections.synchronizedList(new ArrayList<>());
    static final List<String> SENT = Collections.synchronizedList(new ArrayList<>());
    static final Map<String, Integer> EXPECTED_PID = Collections.synchronizedMap(new HashMap<>());
    static final AtomicLong QUERIES = new AtomicLong();
    static volatile boolean stop;

    static void check(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    static Connection connect(String port, String app) throws SQLException {
        String url = "jdbc:postgresql://" + host + ":" + port + "/" + db
                + "?sslmode=disable&connectTimeout=30&socketTimeout=120"
                + (app == null ? "" : "&ApplicationName=" + app);
        return DriverManager.getConnection(url, user, password);
    }

    static int pid(ResultSet rs, int column) throws SQLException {
        check(rs.next(), "no row");
        return rs.getInt(column);
    }

    static String payload(int k) {
        return k % 5 == 2 ? k + " ünï ✓ 🐘 'q'" : Integer.toString(k);
    }

    /** One listening connection, read by its own thread. */
    static class Listener implements Runnable {
        final int i;
        final Connection conn;
        final List<PGNotification> got = new ArrayList<>();
        String error;

        Listener(int i, String port) throws SQLException {
            this.i = i;
            conn = connect(port, null);
            switch (i % 3) {
                case 0 -> {
                    try (Statement s = conn.createStatement()) {
                        s.execute("LISTEN " + CHANNEL);
                    }
                }
                case 1 -> {
                    conn.setAutoCommit(false);
                    try (Statement s = conn.createStatement()) {
                        s.execute("LISTEN " + CHANNEL);
                    }
                    conn.commit();
                    conn.setAutoCommit(true);
                }
                default -> {
                    try (PreparedStatement p = conn.prepareStatement("LISTEN " + CHANNEL)) {
                        p.execute();
                    }
                }
            }
        }

        void poll(int timeoutMillis) throws SQLException {
            PGNotification[] batch = conn.unwrap(PGConnection.class).getNotifications(timeoutMillis);
            if (batch != null) Collections.addAll(got, batch);
        }

        public void run() {
            try (PreparedStatement select = conn.prepareStatement("select ?::int + 1")) {
                long deadline = Long.MAX_VALUE;
                int n = 0;
                while (true) {
                    if (stop && deadline == Long.MAX_VALUE) deadline = System.currentTimeMillis() + WAIT_MS;
                    if (stop && (got.size() >= SENT.size() || System.currentTimeMillis() > deadline)) break;
                    if (!stop) {
                        select.setInt(1, n);
                        try (ResultSet rs = select.executeQuery()) {
                            check(rs.next() && rs.getInt(1) == n + 1, "connection " + i + ": select");
                        }
                        n++;
                        QUERIES.incrementAndGet();
                    }
                    poll(ThreadLocalRandom.current().nextInt(20, 120));
                }
                poll(500); // room for duplicates to show
            } catch (Throwable e) {
                java.io.StringWriter sw = new java.io.StringWriter();
                e.printStackTrace(new java.io.PrintWriter(sw));
                error = "connection " + i + ": " + sw;
            }
        }
    }

    public static void main(String[] a) throws Exception {
        if (a.length < 6) {
            System.err.println("usage: JdbcNotify.java HOST PORT USER PASSWORD DB DIRECT_PORT [CONNS [NOTIFICATIONS]]");
            System.exit(2);
        }
        host = a[0];
        user = a[2];
        password = a[3];
        db = a[4];
        int conns = a.length > 6 ? Integer.parseInt(a[6]) : 10;
        int notifications = a.length > 7 ? Integer.parseInt(a[7]) : 30;
        long started = System.currentTimeMillis();
        Map<String, Integer> byMethod = new HashMap<>();
        List<Listener> listeners = new ArrayList<>();
        List<Thread> threads = new ArrayList<>();
        int ok = 0;
        try (Connection direct = connect(a[5], "notify-direct"); Connection sender = connect(a[1], null)) {
            int directPid;
            try (Statement s = direct.createStatement(); ResultSet rs = s.executeQuery("select pg_backend_pid()")) {
                directPid = pid(rs, 1);
            }
            check(directPid == direct.unwrap(PGConnection.class).getBackendPID(),
                    "direct: pg_backend_pid() differs from the BackendKeyData pid");
            for (int i = 0; i < conns; i++) listeners.add(new Listener(i, a[1]));
            for (Listener l : listeners) {
                Thread t = new Thread(l);
                t.start();
                threads.add(t);
            }
            String[] methods = {"sluice", "direct", "sluice_txn", "direct_txn"};
            try (PreparedStatement viaSluice = sender.prepareStatement("select pg_notify(?, ?), pg_backend_pid()");
                 PreparedStatement viaDirect = direct.prepareStatement("select pg_notify(?, ?), pg_backend_pid()")) {
                for (int k = 0; k < notifications; k++) {
                    String how = methods[k % 4];
                    boolean txn = how.endsWith("_txn");
                    Connection c = how.startsWith("sluice") ? sender : direct;
                    PreparedStatement ps = c == sender ? viaSluice : viaDirect;
                    if (txn) c.setAutoCommit(false);
                    int pid;
                    if (how.equals("direct")) {
                        try (Statement s = direct.createStatement()) {
                            s.execute("NOTIFY " + CHANNEL + ", '" + payload(k).replace("'", "''") + "'");
                        }
                        pid = directPid;
                    } else {
                        ps.setString(1, CHANNEL);
                        ps.setString(2, payload(k));
                        try (ResultSet rs = ps.executeQuery()) {
                            pid = pid(rs, 2);
                        }
                    }
                    if (txn) {
                        c.commit();
                        c.setAutoCommit(true);
                    }
                    check(c != direct || pid == directPid, "direct pid changed");
                    EXPECTED_PID.put(payload(k), pid);
                    SENT.add(payload(k));
                    byMethod.merge(how, 1, Integer::sum);
                    Thread.sleep(ThreadLocalRandom.current().nextInt(10, 40));
                }
            } finally {
                stop = true;
                for (Thread t : threads) t.join();
            }
            for (Listener l : listeners) {
                List<String> bad = new ArrayList<>();
                if (l.error != null) bad.add(l.error);
                List<String> payloads = new ArrayList<>();
                for (PGNotification n : l.got) {
                    if (!n.getName().equals(CHANNEL)) bad.add("connection " + l.i + ": notification on " + n.getName());
                    payloads.add(n.getParameter());
                }
                if (!payloads.equals(SENT)) {
                    bad.add("connection " + l.i + ": received " + payloads.size() + " of " + SENT.size()
                            + " (want once each, in order): " + payloads);
                } else {
                    for (PGNotification n : l.got) {
                        Integer from = EXPECTED_PID.get(n.getParameter());
                        if (from == null || n.getPID() != from) {
                            bad.add("connection " + l.i + ": " + n.getParameter() + " came with pid " + n.getPID()
                                    + ", sent by backend " + from);
                            break;
                        }
                    }
                }
                FAILURES.addAll(bad);
                if (bad.isEmpty()) ok++;
                l.conn.close();
            }
        } catch (Throwable e) {
            java.io.StringWriter sw = new java.io.StringWriter();
            e.printStackTrace(new java.io.PrintWriter(sw));
            FAILURES.add("main: " + sw);
        }
        long received = 0;
        for (Listener l : listeners) received += l.got.size();
        StringBuilder sent = new StringBuilder();
        for (Map.Entry<String, Integer> e : byMethod.entrySet()) {
            sent.append(sent.length() == 0 ? "" : ",").append('"').append(e.getKey()).append("\":").append(e.getValue());
        }
        for (String f : FAILURES) System.err.println(f);
        System.out.println("RESULT {\"connections\":" + conns + ",\"connections_ok\":" + ok
                + ",\"notifications\":" + notifications + ",\"received\":" + received
                + ",\"received_total\":" + received
                + ",\"sent\":{" + sent + "},\"queries\":" + QUERIES.get()
                + ",\"seconds\":" + (System.currentTimeMillis() - started) / 1000.0 + "}");
        System.exit(FAILURES.isEmpty() ? 0 : 1);
    }
}
