// pgjdbc Statement.cancel() through sluice, run by tests/it/drivers/cancel.rs with the single-file source launcher:
//   java -cp /usr/share/java/postgresql.jar JdbcCancel.java HOST PORT DB USER PASSWORD
// Each round runs `select pg_sleep(30)` while a second connection waits until the server shows it
// running and then calls Statement.cancel() (pgjdbc opens a new socket to sluice for the
// CancelRequest; sluice must route it to the server connection the session runs on right now).
// The query must fail with SQLSTATE 57014 within seconds and the same connection must then work.
// Rounds: a Statement, a PreparedStatement with a parameter, and a transaction (rolled back).
// Prints `CHECK <round> ok` or `CHECK <round> FAILED: <why>`; exits 1 if any round failed.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

public class JdbcCancel {
    static String url, user, password;

    static String scalar(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            rs.next();
            return rs.getString(1);
        }
    }

    static String tag(String name) {
        return "/* cancel-" + name + " */ ";
    }

    public static void main(String[] a) throws Exception {
        url = "jdbc:postgresql://" + a[0] + ":" + a[1] + "/" + a[2]
                + "?sslmode=disable&connectTimeout=10&socketTimeout=60";
        user = a[3];
        password = a[4];
        boolean failed = false;
        try (Connection c = DriverManager.getConnection(url, user, password);
                Connection watcher = DriverManager.getConnection(url, user, password)) {
            try (Statement s = c.createStatement()) {
                s.execute("drop table if exists jdbc_cancel_probe");
                s.execute("create table jdbc_cancel_probe (n int)");
            }
            try (Statement s = c.createStatement()) {
                failed |= report("statement",
                        round(c, watcher, "statement", s, tag("statement") + "select pg_sleep(30)"));
            }
            try (PreparedStatement p = c.prepareStatement(tag("prepared") + "select pg_sleep(?)")) {
                p.setInt(1, 30);
                failed |= report("prepared", round(c, watcher, "prepared", p, null));
            }
            try (Statement s = c.createStatement()) {
                c.setAutoCommit(false);
                s.execute("insert into jdbc_cancel_probe values (1)");
                List<String> tx = round(c, watcher, "transaction", s,
                        tag("transaction") + "select pg_sleep(30)");
                String left = scalar(c, "select count(*) from jdbc_cancel_probe");
                if (!left.equals("0")) tx.add(left + " rows of the cancelled transaction were kept");
                failed |= report("transaction", tx);
            }
        }
        System.exit(failed ? 1 : 0);
    }

    static boolean report(String name, List<String> problems) {
        System.out.println("CHECK " + name + (problems.isEmpty() ? " ok" : " FAILED: " + problems));
        return !problems.isEmpty();
    }

    /** Runs `sql` on `s` (or executes `s` itself, a PreparedStatement, when null) and cancels it. */
    static List<String> round(Connection c, Connection watcher, String name, Statement s, String sql)
            throws Exception {
        List<String> problems = Collections.synchronizedList(new ArrayList<>());
        Thread t = new Thread(() -> cancelWhenRunning(watcher, name, s, problems));
        long started = System.nanoTime();
        t.start();
        try {
            if (sql == null) {
                ((PreparedStatement) s).execute();
            } else {
                s.execute(sql);
            }
            problems.add("pg_sleep(30) finished without an error");
        } catch (SQLException e) {
            if (!"57014".equals(e.getSQLState())) {
                problems.add("wrong error " + e.getSQLState() + ": " + e.getMessage());
            }
        }
        t.join();
        if (!c.getAutoCommit()) {
            c.rollback();
            c.setAutoCommit(true);
        }
        double took = (System.nanoTime() - started) / 1e9;
        if (took > 15) problems.add(String.format("cancel took %.1fs", took));
        String alive = scalar(c, "select 'alive-" + name + "'");
        if (!alive.equals("alive-" + name)) problems.add("same connection after cancel returned " + alive);
        return problems;
    }

    /** Waits (up to 10 s) until round `name`'s query runs on the server, then cancels it. */
    static void cancelWhenRunning(Connection watcher, String name, Statement s, List<String> problems) {
        // The pattern is a bind parameter, so the watcher's own query text never matches it.
        try (PreparedStatement q = watcher.prepareStatement(
                "select count(*) from pg_stat_activity where state = 'active'"
                        + " and query like ? and pid <> pg_backend_pid()")) {
            q.setString(1, "%" + tag(name).trim() + "%");
            long deadline = System.nanoTime() + 10_000_000_000L;
            boolean seen = false;
            while (!seen && System.nanoTime() < deadline) {
                try (ResultSet rs = q.executeQuery()) {
                    rs.next();
                    seen = rs.getInt(1) == 1;
                }
                if (!seen) Thread.sleep(50);
            }
            if (!seen) problems.add(name + " never seen running");
            s.cancel();
        } catch (Exception e) {
            problems.add("cancel failed: " + e);
        }
    }
}
